//! Name resolution for the address check: the system's (`tokio::net::lookup_host`, i.e.
//! `getaddrinfo` on tokio's blocking pool), or a fixed table for tests.
//!
//! The proxy resolves a host once per fetch, checks every address it got, and then hands
//! exactly those addresses to the HTTP client (see `fetch.rs`), whose own resolver refuses
//! every name: what was checked is what is connected to.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where addresses come from.
#[derive(Debug, Clone, Default)]
pub enum Resolver {
    /// The system resolver (`getaddrinfo`, through tokio).
    #[default]
    System,
    /// A fixed table (tests: a name the system cannot resolve, or one that resolves to
    /// loopback, without touching DNS).
    Static(StaticResolver),
}

impl From<StaticResolver> for Resolver {
    fn from(s: StaticResolver) -> Self {
        Resolver::Static(s)
    }
}

impl Resolver {
    /// The addresses of `host` (a DNS name, as the URL spells it) with `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let mut addrs: Vec<SocketAddr> = match self {
            Resolver::System => tokio::net::lookup_host((host, port)).await?.collect(),
            Resolver::Static(s) => s.lookup(host, port)?,
        };
        // getaddrinfo lists an address once per socket type unless told otherwise.
        let mut seen = Vec::with_capacity(addrs.len());
        addrs.retain(|a| {
            let new = !seen.contains(a);
            if new {
                seen.push(*a);
            }
            new
        });
        Ok(addrs)
    }
}

/// A resolver answering from a table, counting its lookups.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    names: Arc<HashMap<String, Vec<IpAddr>>>,
    lookups: Arc<AtomicU64>,
}

impl StaticResolver {
    /// An empty table: every name is unknown.
    pub fn new() -> Self {
        StaticResolver::default()
    }

    /// `name` resolves to `addrs`.
    pub fn with(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        Arc::make_mut(&mut self.names).insert(name.to_ascii_lowercase(), addrs.to_vec());
        self
    }

    /// Lookups answered so far (including unknown names).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let key = host.trim_end_matches('.').to_ascii_lowercase();
        match self.names.get(&key) {
            Some(a) => Ok(a.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("'{host}' is not in the static resolver's table"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_static_table_answers_its_names_with_the_port_and_counts_lookups() {
        let r = StaticResolver::new().with("App.Test", &["127.0.0.1".parse().expect("ip")]);
        let resolver = Resolver::from(r.clone());
        let a = resolver.lookup("app.test.", 8080).await.expect("known");
        assert_eq!(a, ["127.0.0.1:8080".parse::<SocketAddr>().expect("addr")]);
        assert!(resolver.lookup("other.test", 1).await.is_err());
        assert_eq!(r.lookups(), 2);
    }

    #[tokio::test]
    async fn the_system_resolver_finds_localhost_on_loopback() {
        let a = Resolver::System
            .lookup("localhost", 80)
            .await
            .expect("localhost resolves");
        assert!(!a.is_empty());
        assert!(a.iter().all(|a| a.ip().is_loopback()), "{a:?}");
    }
}
