//! Filter → SQL translation checked against an in-memory reference evaluator (proptest), plus
//! cursor pagination against a reference sort.

use super::*;
use crate::ddl;
use crate::schema::parse_schema;
use crate::store::cmp_keys;
use proptest::prelude::*;
use rusqlite::Connection;
use std::cmp::Ordering as O;

fn schema() -> CollectionSchema {
    parse_schema(
        "test",
        &json!({"collection": "t", "fields": [
            {"name": "s", "type": "string", "indexed": true},
            {"name": "n", "type": "integer"},
            {"name": "x", "type": "number"},
            {"name": "b", "type": "boolean"},
            {"name": "tags", "type": "json"}
        ]}),
    )
    .expect("schema")
}

#[derive(Debug, Clone)]
struct Rec {
    id: String,
    s: Option<String>,
    n: Option<i64>,
    x: Option<f64>,
    b: Option<bool>,
}

impl Rec {
    fn get(&self, f: &str) -> Sql {
        match f {
            "id" => Sql::Text(self.id.clone()),
            "s" => self.s.clone().map_or(Sql::Null, Sql::Text),
            "n" => self.n.map_or(Sql::Null, Sql::Integer),
            "x" => self.x.map_or(Sql::Null, Sql::Real),
            "b" => self.b.map_or(Sql::Null, |b| Sql::Integer(i64::from(b))),
            _ => Sql::Null,
        }
    }
}

fn cmp(a: &Sql, b: &Sql) -> O {
    crate::store::cmp_sql(a, b)
}

/// The reference semantics, independent of SQL.
fn eval(r: &Rec, field: &str, op: &str, v: &Value) -> bool {
    let f = schema();
    let def = column_def(&f, field).expect("field");
    let val = r.get(field);
    let opnd = |v: &Value| operand(&f, &def, v).expect("operand");
    match op {
        "$eq" => match opnd(v) {
            Sql::Null => val == Sql::Null,
            o => val != Sql::Null && cmp(&val, &o) == O::Equal,
        },
        "$ne" => match opnd(v) {
            Sql::Null => val != Sql::Null,
            o => val == Sql::Null || cmp(&val, &o) != O::Equal,
        },
        "$gt" | "$gte" | "$lt" | "$lte" => {
            if val == Sql::Null {
                return false;
            }
            let c = cmp(&val, &opnd(v));
            match op {
                "$gt" => c == O::Greater,
                "$gte" => c != O::Less,
                "$lt" => c == O::Less,
                _ => c != O::Greater,
            }
        }
        "$in" | "$nin" => {
            let list: Vec<Sql> = v.as_array().expect("arr").iter().map(opnd).collect();
            let hit = list.iter().any(|o| match o {
                Sql::Null => val == Sql::Null,
                o => val != Sql::Null && cmp(&val, o) == O::Equal,
            });
            if op == "$in" { hit } else { !hit }
        }
        "$exists" => (val != Sql::Null) == v.as_bool().expect("bool"),
        "$contains" => match (&val, v.as_str()) {
            (Sql::Text(t), Some(s)) => t.contains(s),
            _ => false,
        },
        _ => unreachable!(),
    }
}

fn arb_rec() -> impl Strategy<Value = Rec> {
    (
        proptest::option::of("[a-c]{0,3}"),
        proptest::option::of(-3i64..4),
        proptest::option::of((-3i64..4).prop_map(|i| i as f64 / 2.0)),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(s, n, x, b)| Rec {
            id: String::new(),
            s,
            n,
            x,
            b,
        })
}

fn arb_operand(field: &'static str) -> BoxedStrategy<Value> {
    match field {
        "s" | "id" => prop_oneof![Just(Value::Null), "[a-c]{0,2}".prop_map(Value::from)].boxed(),
        "n" => prop_oneof![Just(Value::Null), (-3i64..4).prop_map(Value::from)].boxed(),
        "x" => prop_oneof![
            Just(Value::Null),
            (-3i64..4).prop_map(|i| json!(i as f64 / 2.0))
        ]
        .boxed(),
        _ => prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from)].boxed(),
    }
}

fn arb_cond() -> impl Strategy<Value = (String, String, Value)> {
    let fields = prop_oneof![Just("s"), Just("n"), Just("x"), Just("b")];
    fields.prop_flat_map(|f| {
        let ops = if f == "s" {
            prop_oneof![
                Just("$eq"),
                Just("$ne"),
                Just("$gt"),
                Just("$gte"),
                Just("$lt"),
                Just("$lte"),
                Just("$in"),
                Just("$nin"),
                Just("$exists"),
                Just("$contains")
            ]
            .boxed()
        } else {
            prop_oneof![
                Just("$eq"),
                Just("$ne"),
                Just("$gt"),
                Just("$gte"),
                Just("$lt"),
                Just("$lte"),
                Just("$in"),
                Just("$nin"),
                Just("$exists")
            ]
            .boxed()
        };
        (Just(f), ops).prop_flat_map(move |(f, op)| {
            let v: BoxedStrategy<Value> = match op {
                "$in" | "$nin" => proptest::collection::vec(arb_operand(f), 0..4)
                    .prop_map(Value::from)
                    .boxed(),
                "$exists" => any::<bool>().prop_map(Value::from).boxed(),
                "$contains" => "[a-c]{0,2}".prop_map(Value::from).boxed(),
                "$gt" | "$gte" | "$lt" | "$lte" => arb_operand(f)
                    .prop_filter("non-null", |v| !v.is_null())
                    .boxed(),
                _ => arb_operand(f),
            };
            (Just(f.to_owned()), Just(op.to_owned()), v)
        })
    })
}

fn load(recs: &mut [Rec]) -> Connection {
    let conn = Connection::open_in_memory().expect("mem");
    let s = schema();
    conn.execute_batch(&ddl::create_table_sql(
        "main",
        "t",
        &s.fields
            .iter()
            .map(|f| (f.name.clone(), f.ty.sql_type().to_owned()))
            .collect::<Vec<_>>(),
    ))
    .expect("table");
    for ix in &s.indexes {
        conn.execute_batch(&ddl::create_index_sql("main", "t", ix, false))
            .expect("index");
    }
    for (i, r) in recs.iter_mut().enumerate() {
        r.id = format!("r{i:03}");
        conn.execute(
            "INSERT INTO t(id, createdAt, updatedAt, version, s, n, x, b) VALUES (?1,'c','c',1,?2,?3,?4,?5)",
            rusqlite::params![r.id, r.get("s"), r.get("n"), r.get("x"), r.get("b")],
        )
        .expect("insert");
    }
    conn
}

fn run(conn: &Connection, frag: &Fragment, order: &str) -> Vec<String> {
    let sql = format!("SELECT id FROM t WHERE {} ORDER BY {order}", frag.sql);
    let mut st = conn.prepare(&sql).expect("prepare");
    st.query_map(rusqlite::params_from_iter(frag.params.iter()), |r| r.get(0))
        .expect("query")
        .collect::<Result<Vec<String>, _>>()
        .expect("rows")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn filter_sql_matches_reference(
        mut recs in proptest::collection::vec(arb_rec(), 0..25),
        conds in proptest::collection::vec(arb_cond(), 1..3),
    ) {
        let conn = load(&mut recs);
        let s = schema();
        let mut filter = Map::new();
        for (f, op, v) in &conds {
            let e = filter.entry(f.clone()).or_insert_with(|| json!({}));
            e.as_object_mut().expect("obj").insert(op.clone(), v.clone());
        }
        let frag = compile_filter(&s, Some(&Value::Object(filter.clone()))).expect("compile");
        let got = run(&conn, &frag, "id");
        // Reference: a field's ops all apply (later duplicates of an op overwrite, like the map).
        let want: Vec<String> = recs
            .iter()
            .filter(|r| filter.iter().all(|(f, ops)| {
                ops.as_object().expect("ops").iter().all(|(op, v)| eval(r, f, op, v))
            }))
            .map(|r| r.id.clone())
            .collect();
        prop_assert_eq!(got, want, "filter {}", Value::Object(filter));
    }

    #[test]
    fn cursor_pages_concatenate_to_the_full_order(
        mut recs in proptest::collection::vec(arb_rec(), 0..30),
        keys in proptest::collection::vec((prop_oneof![Just("s"), Just("n"), Just("x"), Just("b")], any::<bool>()), 1..3),
        page in 1usize..5,
    ) {
        let conn = load(&mut recs);
        let s = schema();
        let order: Vec<Value> = keys
            .iter()
            .map(|(f, d)| json!({"field": f, "direction": if *d { "desc" } else { "asc" }}))
            .collect();
        let keys = parse_order(&s, Some(&Value::Array(order))).expect("order");
        // Reference: sort in Rust with SQLite's ordering rules.
        let mut want = recs.clone();
        want.sort_by(|a, b| {
            let ka: Vec<Sql> = keys.iter().map(|k| a.get(&k.field)).collect();
            let kb: Vec<Sql> = keys.iter().map(|k| b.get(&k.field)).collect();
            cmp_keys(&keys, &ka, &kb)
        });
        let want: Vec<String> = want.into_iter().map(|r| r.id).collect();
        let mut got = Vec::new();
        let mut cursor: Option<Vec<Sql>> = None;
        for _ in 0..100 {
            let frag = match &cursor {
                None => Fragment { sql: "1".into(), params: vec![] },
                Some(v) => {
                    // Round trip through the opaque text form.
                    let text = encode_cursor(&keys, v);
                    cursor_predicate(&keys, &decode_cursor(&keys, &text).expect("decode"))
                }
            };
            let sql = format!("SELECT id FROM t WHERE {} ORDER BY {} LIMIT {page}", frag.sql, order_sql(&keys));
            let mut st = conn.prepare(&sql).expect("prepare");
            let ids: Vec<String> = st
                .query_map(rusqlite::params_from_iter(frag.params.iter()), |r| r.get(0))
                .expect("q")
                .collect::<Result<_, _>>()
                .expect("rows");
            if ids.is_empty() {
                break;
            }
            let last = ids.last().cloned().expect("last");
            got.extend(ids);
            let rec = recs.iter().find(|r| r.id == last).expect("rec");
            cursor = Some(keys.iter().map(|k| rec.get(&k.field)).collect());
        }
        prop_assert_eq!(got, want);
    }
}

#[test]
fn identifiers_outside_the_schema_are_refused_everywhere() {
    let s = schema();
    let evil = "s\" OR 1=1 --";
    assert!(matches!(
        compile_filter(&s, Some(&json!({ evil: 1 }))),
        Err(DataError::Validation { .. })
    ));
    assert!(matches!(
        compile_filter(&s, Some(&json!({"s": {"$regex; DROP": 1}}))),
        Err(DataError::BadRequest(_))
    ));
    assert!(parse_order(&s, Some(&json!([{"field": evil}]))).is_err());
    assert!(
        parse_order(
            &s,
            Some(&json!([{"field": "s", "direction": "asc; DROP TABLE t"}]))
        )
        .is_err()
    );
    assert!(projection(&s, Some(&json!([evil])), &[]).is_err());
    let keys = parse_order(&s, None).expect("order");
    assert!(decode_cursor(&keys, "zz").is_err());
    assert!(
        decode_cursor(
            &keys,
            &encode_cursor(
                &parse_order(&s, Some(&json!("s"))).expect("o"),
                &[Sql::Null, Sql::Null]
            )
        )
        .is_err()
    );
}

#[test]
fn json_contains_tests_array_elements() {
    let conn = Connection::open_in_memory().expect("mem");
    conn.execute_batch(
        "CREATE TABLE t(id TEXT, tags TEXT); INSERT INTO t VALUES ('a', '[\"x\",\"y\"]'), ('b', '[\"z\"]'), ('c', NULL), ('d', '{\"x\":1}');",
    )
    .expect("setup");
    let s = schema();
    let frag = compile_filter(&s, Some(&json!({"tags": {"$contains": "x"}}))).expect("compile");
    assert_eq!(run(&conn, &frag, "id"), vec!["a".to_owned()]);
    assert!(compile_filter(&s, Some(&json!({"tags": {"$eq": 1}}))).is_err());
}
