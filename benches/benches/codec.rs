//! Frame decode + encode of a small request and response, against the baseline of a plain
//! `serde_json::from_slice::<Value>` + `to_vec` of the same bodies.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use daemonhost_protocol::{DEFAULT_MAX_FRAME, Frame, HEADER_LEN, Request, Response, write_frame};
use serde_json::{Value, json};

fn bodies() -> [(&'static str, Vec<u8>); 2] {
    let req = Frame::Request(
        Request::new(17, "data/list", json!({"collection": "users", "limit": 10}))
            .with_timeout_ms(5000),
    );
    let resp = Frame::Response(Response::ok(
        17,
        json!({"items": [{"id": "0190c6a2", "name": "ada"}], "count": 1}),
    ));
    [("request", req.to_vec()), ("response", resp.to_vec())]
}

fn bench(c: &mut Criterion) {
    for (name, body) in bodies() {
        let mut g = c.benchmark_group(format!("codec/{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("baseline_value_from_slice_to_vec", |b| {
            b.iter(|| {
                let v: Value = serde_json::from_slice(black_box(&body)).expect("json");
                black_box(serde_json::to_vec(&v).expect("serialize"))
            })
        });
        g.bench_function("frame_decode_encode", |b| {
            b.iter(|| {
                let f = Frame::decode(black_box(&body)).expect("frame");
                black_box(f.to_vec())
            })
        });
        // What the codec does per frame: check the length prefix, decode the body, then encode
        // the frame with its prefix into a reused output buffer (a `BytesMut`).
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        g.bench_function("framed_decode_encode", |b| {
            let mut dst = Default::default();
            write_frame(
                &mut dst,
                &Frame::decode(&body).expect("frame"),
                DEFAULT_MAX_FRAME,
            )
            .expect("encode");
            b.iter(|| {
                let input = black_box(&framed[..]);
                let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
                assert!(len <= DEFAULT_MAX_FRAME);
                let f = Frame::decode(&input[HEADER_LEN..HEADER_LEN + len]).expect("frame");
                dst.clear();
                write_frame(&mut dst, &f, DEFAULT_MAX_FRAME).expect("encode");
                black_box(&dst);
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
