//! The `governance` daemon: proposals, votes and their finalisation (`decision_proposals`).
//!
//! - `decision/propose {title, description?, options[2..20], deadline? (epoch ms or RFC 3339;
//!   default now + default_voting), proposer (alias proposerId)}` → the proposal
//!   (`status: voting`, `votes: {}`)
//! - `decision/vote {proposalId, voter, option}` → the proposal; one vote per voter, changeable
//!   while the proposal is `voting`
//! - `decision/finalize {proposalId}` → the proposal. The option with the most votes wins
//!   (`status: finalized`, `result: {winner, tally, totalVotes}`); a tie for first place or fewer
//!   than `min_votes` votes gives `status: manual_review` and publishes
//!   `governance:manual-review-required {proposalId, title, reason, tally}`. Every finalisation
//!   publishes `governance:decision-finalized`. Finalising a final proposal returns it unchanged.
//! - `decision/list {status?, limit? (100, max 1000), cursor?}` → `{items, count, nextCursor}`
//! - `decision/get {proposalId}` → the proposal
//!
//! Overdue proposals (`status: voting`, deadline passed) are finalised by a **registered
//! interval** ([`GovernanceConfig::interval`], at most [`GovernanceConfig::max_per_tick`] per
//! tick, oldest deadline first) that the runtime cancels when the daemon stops, unlike the seed's
//! bare `setInterval`. Writes are version-checked and retried a bounded number of times, so a
//! vote racing the finaliser either lands before the tally or is refused after it, never lost.

use crate::util::{MAX_KEY, ParamError, ParamType, Params, obj, params_of, short, version_of};
use daemonhost_data_client::{Data, DataClient, DataClientError, Handle, ListParams};
use daemonhost_protocol::time::{format_ms, now_ms, parse_date_ms};
use daemonhost_runtime::{
    BoxError, CommandSpec, Context, Daemon, DaemonError, DaemonSpec, Request,
};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Most options of one proposal.
pub const MAX_OPTIONS: usize = 20;
/// Most voters on one proposal.
pub const MAX_VOTERS: usize = 10_000;
/// Retries of a write that lost a version race.
const WRITE_RETRIES: usize = 5;

/// Settings of the [`GovernanceDaemon`].
#[derive(Debug, Clone)]
pub struct GovernanceConfig {
    /// Period of the overdue-proposal finaliser.
    pub interval: Duration,
    /// Fewer votes than this at finalisation → manual review.
    pub min_votes: usize,
    /// Voting period when `decision/propose` gives no deadline.
    pub default_voting: Duration,
    /// Most proposals finalised per tick.
    pub max_per_tick: usize,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        GovernanceConfig {
            interval: Duration::from_secs(5),
            min_votes: 1,
            default_voting: Duration::from_secs(24 * 3600),
            max_per_tick: 100,
        }
    }
}

/// The governance daemon (name `governance`).
#[derive(Debug, Clone)]
pub struct GovernanceDaemon {
    store: DataClient,
    cfg: GovernanceConfig,
}

impl GovernanceDaemon {
    /// A governance daemon reading the store from `store`.
    pub fn new(store: DataClient, cfg: GovernanceConfig) -> Self {
        GovernanceDaemon { store, cfg }
    }
}

#[derive(Debug, Default)]
struct Counters {
    proposed: AtomicU64,
    votes: AtomicU64,
    finalized: AtomicU64,
    manual_review: AtomicU64,
    auto_finalized: AtomicU64,
    tick_failures: AtomicU64,
}

/// What finalising needs; shared with the interval's closure.
#[derive(Debug)]
struct Core {
    store: Data,
    min_votes: usize,
    max_per_tick: usize,
    counters: Counters,
}

/// The running governance daemon's state.
#[derive(Debug)]
pub struct GovernanceState {
    core: Arc<Core>,
}

fn not_found(id: &str) -> DaemonError {
    DaemonError::not_found(format!("proposalId: no proposal with id '{}'", short(id)))
}

fn deadline_ms(v: &Value) -> Result<i64, DaemonError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| DaemonError::validation("deadline: epoch milliseconds out of range")),
        Value::String(s) => parse_date_ms(s).ok_or_else(|| {
            DaemonError::validation(format!(
                "deadline: '{}' is not an RFC 3339 date or epoch milliseconds",
                short(s)
            ))
        }),
        _ => Err(DaemonError::bad_request(
            "deadline: must be epoch milliseconds or an RFC 3339 string",
        )),
    }
}

fn options_of(p: &Value) -> Vec<String> {
    p.get("options")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Tally: (option → votes, in option order), total, the winner if there is exactly one.
fn tally(p: &Value) -> (BTreeMap<String, u64>, u64, Option<String>) {
    let mut t: BTreeMap<String, u64> = options_of(p).into_iter().map(|o| (o, 0)).collect();
    let mut total = 0;
    if let Some(votes) = p.get("votes").and_then(Value::as_object) {
        for v in votes.values().filter_map(Value::as_str) {
            if let Some(n) = t.get_mut(v) {
                *n += 1;
                total += 1;
            }
        }
    }
    let max = t.values().copied().max().unwrap_or(0);
    let top: Vec<&String> = t
        .iter()
        .filter(|(_, n)| **n == max)
        .map(|(o, _)| o)
        .collect();
    let winner = (max > 0 && top.len() == 1).then(|| top[0].clone());
    (t, total, winner)
}

impl Core {
    async fn read(&self, id: &str) -> Result<Value, DaemonError> {
        match self
            .store
            .read(&Handle::Primary, "decision_proposals", id)
            .await
        {
            Ok(p) => Ok(p),
            Err(DataClientError::NotFound { .. }) => Err(not_found(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Finalise one proposal; returns it and whether this call finalised it.
    async fn finalize(&self, ctx: &Context, id: &str) -> Result<(Value, bool), DaemonError> {
        let mut tries = 0;
        loop {
            let p = self.read(id).await?;
            if p.get("status").and_then(Value::as_str) != Some("voting") {
                return Ok((p, false));
            }
            let (t, total, winner) = tally(&p);
            let reason = if (total as usize) < self.min_votes {
                Some(format!(
                    "no quorum: {total} vote(s), {} needed",
                    self.min_votes
                ))
            } else if winner.is_none() {
                Some("tie for first place".to_owned())
            } else {
                None
            };
            let status = if reason.is_some() {
                "manual_review"
            } else {
                "finalized"
            };
            let result = json!({
                "winner": winner, "tally": t, "totalVotes": total, "reason": reason,
                "finalizedAt": format_ms(now_ms()),
            });
            match self
                .store
                .update(
                    &Handle::Primary,
                    "decision_proposals",
                    id,
                    obj(json!({ "status": status, "result": result })),
                    version_of(&p),
                )
                .await
            {
                Ok(done) => {
                    self.counters.finalized.fetch_add(1, Ordering::Relaxed);
                    let title = done.get("title").cloned().unwrap_or(Value::Null);
                    if let Some(reason) = &reason {
                        self.counters.manual_review.fetch_add(1, Ordering::Relaxed);
                        ctx.publish(
                            "governance:manual-review-required",
                            json!({ "proposalId": id, "title": title, "reason": reason, "tally": t }),
                        );
                    }
                    ctx.publish(
                        "governance:decision-finalized",
                        json!({ "proposalId": id, "title": title, "status": status, "winner": winner, "tally": t }),
                    );
                    return Ok((done, true));
                }
                Err(DataClientError::VersionConflict { .. }) if tries < WRITE_RETRIES => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Finalise up to `max_per_tick` overdue proposals, oldest deadline first.
    async fn finalize_overdue(&self, ctx: &Context) -> Result<usize, DaemonError> {
        let page = self
            .store
            .list(
                &Handle::Primary,
                "decision_proposals",
                ListParams {
                    filter: Some(json!({
                        "status": "voting",
                        "deadline": { "$lte": format_ms(now_ms()) },
                    })),
                    order_by: Some(json!([{ "field": "deadline", "direction": "asc" }])),
                    limit: Some(json!(self.max_per_tick.max(1))),
                    fields: Some(json!(["id"])),
                    ..Default::default()
                },
            )
            .await?;
        let mut n = 0;
        for p in &page.items {
            if let Some(id) = p.get("id").and_then(Value::as_str)
                && self.finalize(ctx, id).await?.1
            {
                n += 1;
            }
        }
        self.counters
            .auto_finalized
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn stats(&self) -> Value {
        let c = &self.counters;
        json!({
            "proposed": c.proposed.load(Ordering::Relaxed),
            "votes": c.votes.load(Ordering::Relaxed),
            "finalized": c.finalized.load(Ordering::Relaxed),
            "manualReview": c.manual_review.load(Ordering::Relaxed),
            "autoFinalized": c.auto_finalized.load(Ordering::Relaxed),
            "tickFailures": c.tick_failures.load(Ordering::Relaxed),
        })
    }
}

async fn propose(core: &Core, cfg: &GovernanceConfig, p: &Params) -> Result<Value, DaemonError> {
    let title = p.str_max("title", 200)?;
    let proposer = p
        .opt_str_any(&["proposer", "proposerId"], MAX_KEY)
        .and_then(|v| v.ok_or_else(|| ParamError::missing("proposer")))?;
    let opts = match p.get("options") {
        Some(Value::Array(opts)) => opts,
        Some(_) => {
            return Err(DaemonError::from(ParamError::wrong_type(
                "options",
                ParamType::Array,
            )));
        }
        None => return Err(DaemonError::from(ParamError::missing("options"))),
    };
    if opts.len() < 2 || opts.len() > MAX_OPTIONS {
        return Err(DaemonError::validation(format!(
            "options: 2 to {MAX_OPTIONS} options (got {})",
            opts.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut options = Vec::with_capacity(opts.len());
    for (i, o) in opts.iter().enumerate() {
        match o.as_str().map(str::trim) {
            Some(s) if !s.is_empty() && s.chars().count() <= 200 => {
                if !seen.insert(s) {
                    return Err(DaemonError::validation(format!(
                        "options[{i}]: '{}' is listed twice",
                        short(s)
                    )));
                }
                options.push(s.to_owned());
            }
            Some(_) => {
                return Err(DaemonError::validation(format!(
                    "options[{i}]: must be a non-empty string of at most 200 characters"
                )));
            }
            None => {
                return Err(DaemonError::bad_request(format!(
                    "options[{i}]: must be a string"
                )));
            }
        }
    }
    let deadline = match p.get("deadline") {
        Some(v) => deadline_ms(v)?,
        None => now_ms()
            .saturating_add(i64::try_from(cfg.default_voting.as_millis()).unwrap_or(i64::MAX / 2)),
    };
    let mut data = Map::new();
    data.insert("title".into(), json!(title));
    data.insert("proposerId".into(), json!(proposer));
    data.insert("options".into(), json!(options));
    data.insert("votes".into(), json!({}));
    data.insert("status".into(), json!("voting"));
    data.insert("deadline".into(), json!(format_ms(deadline)));
    if let Some(d) = p.opt_str_max("description", 10_000)? {
        data.insert("description".into(), json!(d));
    }
    let rec = core
        .store
        .create(&Handle::Primary, "decision_proposals", None, data)
        .await?;
    core.counters.proposed.fetch_add(1, Ordering::Relaxed);
    Ok(rec)
}

async fn vote(core: &Core, p: &Params) -> Result<Value, DaemonError> {
    let id = p.str_max("proposalId", MAX_KEY)?;
    let voter = p.str_max("voter", MAX_KEY)?;
    let option = p.str_max("option", 200)?;
    let mut tries = 0;
    loop {
        let prop = core.read(id).await?;
        let status = prop.get("status").and_then(Value::as_str).unwrap_or("");
        if status != "voting" {
            return Err(DaemonError::validation(format!(
                "proposalId: proposal is {status}, voting is closed"
            )));
        }
        if !options_of(&prop).iter().any(|o| o == option) {
            return Err(DaemonError::validation(format!(
                "option: '{}' is not one of {}",
                short(option),
                options_of(&prop).join(", ")
            )));
        }
        let mut votes = prop
            .get("votes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if !votes.contains_key(voter) && votes.len() >= MAX_VOTERS {
            return Err(DaemonError::validation(format!(
                "voter: the proposal already has {MAX_VOTERS} voters"
            )));
        }
        votes.insert(voter.to_owned(), json!(option));
        match core
            .store
            .update(
                &Handle::Primary,
                "decision_proposals",
                id,
                obj(json!({ "votes": votes })),
                version_of(&prop),
            )
            .await
        {
            Ok(rec) => {
                core.counters.votes.fetch_add(1, Ordering::Relaxed);
                return Ok(rec);
            }
            Err(DataClientError::VersionConflict { .. }) if tries < WRITE_RETRIES => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

impl Daemon for GovernanceDaemon {
    type State = GovernanceState;

    fn spec(&self) -> DaemonSpec {
        DaemonSpec::new("governance")
            .requires("data")
            .command(
                CommandSpec::new("decision/propose", "Open a proposal for voting")
                    .param("title", "string", true, "at most 200 characters")
                    .param("description", "string", false, "details")
                    .param("options", "array", true, "2 to 20 distinct option strings")
                    .param(
                        "deadline",
                        "string|integer",
                        false,
                        "epoch ms or RFC 3339 (default: in 24 h)",
                    )
                    .param(
                        "proposer",
                        "string",
                        false,
                        "proposer user id; required, as proposer or its alias proposerId",
                    ),
            )
            .command(
                CommandSpec::new(
                    "decision/vote",
                    "Vote (or change your vote) on an open proposal",
                )
                .param("proposalId", "string", true, "proposal id")
                .param("voter", "string", true, "voter user id")
                .param("option", "string", true, "one of the proposal's options"),
            )
            .command(
                CommandSpec::new(
                    "decision/finalize",
                    "Tally and close a proposal (tie or no quorum: manual review)",
                )
                .param("proposalId", "string", true, "proposal id"),
            )
            .command(
                CommandSpec::new("decision/list", "A page of proposals, newest first")
                    .param(
                        "status",
                        "string",
                        false,
                        "voting | finalized | manual_review | ...",
                    )
                    .param(
                        "limit",
                        "integer",
                        false,
                        "page size, default 100, max 1000",
                    )
                    .param("cursor", "string", false, "nextCursor of the previous page"),
            )
            .command(CommandSpec::new("decision/get", "One proposal").param(
                "proposalId",
                "string",
                true,
                "proposal id",
            ))
    }

    async fn start(&self, ctx: &Context) -> Result<GovernanceState, BoxError> {
        let core = Arc::new(Core {
            store: self.store.bind(ctx.router()),
            min_votes: self.cfg.min_votes,
            max_per_tick: self.cfg.max_per_tick,
            counters: Counters::default(),
        });
        ctx.set_details(core.stats());
        Ok(GovernanceState { core })
    }

    async fn start_deferred(&self, ctx: &Context, state: &GovernanceState) -> Result<(), BoxError> {
        let core = state.core.clone();
        let tick_ctx = ctx.clone();
        ctx.timers()
            .register_interval("finalize-overdue", self.cfg.interval, move || {
                let core = core.clone();
                let ctx = tick_ctx.clone();
                async move {
                    if let Err(e) = core.finalize_overdue(&ctx).await {
                        core.counters.tick_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "finalising overdue proposals failed");
                    }
                    ctx.set_details(core.stats());
                }
            })?;
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &Context,
        state: &GovernanceState,
        req: Request,
    ) -> Result<Value, DaemonError> {
        let core = &state.core;
        let p = params_of(req.params)?;
        let out = match req.command.as_str() {
            "decision/propose" => propose(core, &self.cfg, &p).await,
            "decision/vote" => vote(core, &p).await,
            "decision/finalize" => {
                let id = p.str_max("proposalId", MAX_KEY)?;
                core.finalize(ctx, id).await.map(|(rec, _)| rec)
            }
            "decision/get" => core.read(p.str_max("proposalId", MAX_KEY)?).await,
            "decision/list" => {
                let limit = p.limit(100, 1000)?;
                let mut filter = Map::new();
                if let Some(s) = p.opt_str_max("status", 20)? {
                    filter.insert("status".into(), json!(s));
                }
                let page = core
                    .store
                    .list(
                        &Handle::Primary,
                        "decision_proposals",
                        ListParams {
                            filter: Some(Value::Object(filter)),
                            limit: Some(json!(limit)),
                            cursor: p.opt_str_max("cursor", 4096)?.map(str::to_owned),
                            ..Default::default()
                        },
                    )
                    .await?;
                Ok(
                    json!({ "items": page.items, "count": page.count, "nextCursor": page.next_cursor }),
                )
            }
            other => Err(DaemonError::unknown_command(format!(
                "governance daemon has no command '{}'",
                short(other)
            ))),
        };
        ctx.set_details(core.stats());
        out
    }
}
