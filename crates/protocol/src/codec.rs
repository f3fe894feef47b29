//! Length-prefixed framing: a 4-byte big-endian `u32` length `N`, then `N` bytes of JSON body.
//!
//! [`RawFrameCodec`] only splits the stream into bodies (so a host can move JSON decoding off the
//! socket-reader task); [`FrameCodec`] also decodes each body into a [`Frame`]. A body that is not a
//! valid frame is an *item* (`Err(BadFrame)`), not a stream error: framing is intact and the
//! connection goes on. Only a declared length above the maximum is a stream error, reported before
//! any buffer space is reserved for it. A length within the maximum is not trusted either: the
//! buffer grows with the bytes that arrive, at most 64 KiB ahead of them.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{BadFrame, Frame};

/// Default maximum body length: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Buffer space reserved at most, per decode, for the rest of a frame that has begun: a header
/// alone (4 bytes) never reserves the length it claims (up to the maximum, 16 MiB by default),
/// only this much; the buffer grows (doubling) as the body really arrives.
const RESERVE_AHEAD: usize = 64 * 1024;

/// A stream-level framing error. After one, the connection must be closed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The underlying socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer declared a body longer than the maximum. Nothing was allocated for it; answer
    /// `frame_too_large` with `id` null and close the connection.
    #[error("frame of {declared} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The length the peer declared.
        declared: usize,
        /// The configured maximum.
        max: usize,
    },
    /// This side tried to send a body longer than the maximum; nothing was written.
    #[error("outgoing frame of {len} bytes exceeds the maximum of {max} bytes")]
    BodyTooLarge {
        /// The body's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Splits a byte stream into frame bodies and frames outgoing bodies.
#[derive(Debug, Clone, Copy)]
pub struct RawFrameCodec {
    max_frame_len: usize,
}

impl Default for RawFrameCodec {
    fn default() -> Self {
        RawFrameCodec::new()
    }
}

impl RawFrameCodec {
    /// A codec with the default 16 MiB maximum.
    pub fn new() -> Self {
        RawFrameCodec {
            max_frame_len: DEFAULT_MAX_FRAME,
        }
    }

    /// A codec with a custom maximum body length (capped at `u32::MAX`).
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        RawFrameCodec {
            max_frame_len: max_frame_len.min(u32::MAX as usize),
        }
    }

    /// The configured maximum body length.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }
}

impl Decoder for RawFrameCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let Some(header) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let declared = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if declared > self.max_frame_len {
            // Checked before any reservation: a hostile length allocates nothing.
            return Err(CodecError::FrameTooLarge {
                declared,
                max: self.max_frame_len,
            });
        }
        let total = HEADER_LEN + declared;
        if src.len() < total {
            src.reserve((total - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        Ok(Some(src.split_to(declared).freeze()))
    }
}

/// Write one already-serialized body with its length prefix.
pub fn write_body(dst: &mut BytesMut, body: &[u8], max_frame_len: usize) -> Result<(), CodecError> {
    let len = body.len();
    if len > max_frame_len || len > u32::MAX as usize {
        return Err(CodecError::BodyTooLarge {
            len,
            max: max_frame_len,
        });
    }
    dst.reserve(HEADER_LEN + len);
    dst.put_u32(len as u32);
    dst.put_slice(body);
    Ok(())
}

/// Serialize `frame` with its length prefix straight into `dst` (no intermediate buffer). On
/// error `dst` is left as it was.
pub fn write_frame(
    dst: &mut BytesMut,
    frame: &Frame,
    max_frame_len: usize,
) -> Result<(), CodecError> {
    let start = dst.len();
    dst.put_u32(0);
    frame.encode_into(dst);
    let len = dst.len() - start - HEADER_LEN;
    if len > max_frame_len || len > u32::MAX as usize {
        dst.truncate(start);
        return Err(CodecError::BodyTooLarge {
            len,
            max: max_frame_len,
        });
    }
    dst[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

impl Encoder<Bytes> for RawFrameCodec {
    type Error = CodecError;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        write_body(dst, &body, self.max_frame_len)
    }
}

impl Encoder<&[u8]> for RawFrameCodec {
    type Error = CodecError;

    fn encode(&mut self, body: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        write_body(dst, body, self.max_frame_len)
    }
}

/// Splits a byte stream into decoded frames; encodes frames and pre-serialized bodies.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec {
    raw: RawFrameCodec,
}

impl FrameCodec {
    /// A codec with the default 16 MiB maximum.
    pub fn new() -> Self {
        FrameCodec::default()
    }

    /// A codec with a custom maximum body length (capped at `u32::MAX`).
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        FrameCodec {
            raw: RawFrameCodec::with_max_frame_len(max_frame_len),
        }
    }

    /// The configured maximum body length.
    pub fn max_frame_len(&self) -> usize {
        self.raw.max_frame_len()
    }
}

impl Decoder for FrameCodec {
    type Item = Result<Frame, BadFrame>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        Ok(self.raw.decode(src)?.map(|body| Frame::decode(&body)))
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        write_frame(dst, frame, self.max_frame_len())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        write_frame(dst, &frame, self.max_frame_len())
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        write_body(dst, &body, self.max_frame_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Request, Response};
    use serde_json::json;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn too_large_is_rejected_before_reserving() {
        let mut codec = FrameCodec::with_max_frame_len(1024);
        let mut buf = BytesMut::with_capacity(8);
        buf.put_u32(1025);
        let cap = buf.capacity();
        match codec.decode(&mut buf) {
            Err(CodecError::FrameTooLarge { declared, max }) => {
                assert_eq!((declared, max), (1025, 1024));
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(buf.capacity(), cap);

        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::with_capacity(8);
        buf.put_u32(u32::MAX);
        let cap = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::FrameTooLarge { declared, max: DEFAULT_MAX_FRAME })
                if declared == u32::MAX as usize
        ));
        assert_eq!(buf.capacity(), cap);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// A header claiming up to the maximum, and whatever part of the body came with it,
        /// reserve at most 64 KiB ahead of what arrived (the buffer's doubling aside), never
        /// the claimed length; the frame still decodes once it is all there.
        #[test]
        fn a_begun_frame_reserves_what_arrives_not_what_its_header_claims(
            declared in 0usize..=DEFAULT_MAX_FRAME,
            arrived in 0usize..200_000,
        ) {
            let arrived = arrived.min(declared);
            let mut codec = RawFrameCodec::new();
            let mut buf = BytesMut::new();
            buf.put_u32(declared as u32);
            buf.extend(std::iter::repeat_n(b' ', arrived));
            if arrived < declared {
                proptest::prop_assert!(codec.decode(&mut buf).expect("no error").is_none());
                let bound = 2 * (HEADER_LEN + arrived + RESERVE_AHEAD);
                proptest::prop_assert!(
                    buf.capacity() <= bound,
                    "{} bytes reserved for {} arrived of {}", buf.capacity(), arrived, declared
                );
            } else {
                let body = codec.decode(&mut buf).expect("no error").expect("a body");
                proptest::prop_assert_eq!(body.len(), declared);
            }
        }
    }

    #[test]
    fn a_frame_arriving_in_pieces_grows_the_buffer_and_decodes_whole() {
        let body = vec![b'x'; 3 * RESERVE_AHEAD + 17];
        let all = framed(&body);
        let mut codec = RawFrameCodec::new();
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in all.chunks(1000) {
            assert!(got.is_none(), "decoded before the last byte");
            buf.extend_from_slice(chunk);
            got = codec.decode(&mut buf).expect("no error");
        }
        assert_eq!(got.as_deref(), Some(&body[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn max_length_itself_is_accepted() {
        let mut codec = RawFrameCodec::with_max_frame_len(4);
        let mut buf = BytesMut::from(&framed(b"null")[..]);
        assert_eq!(
            codec.decode(&mut buf).expect("decode"),
            Some(Bytes::from_static(b"null"))
        );
    }

    #[test]
    fn partial_then_complete() {
        let body = Frame::Request(Request::new(1, "ping", json!({}))).to_vec();
        let all = framed(&body);
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&all[..2]);
        assert!(codec.decode(&mut buf).expect("decode").is_none());
        buf.extend_from_slice(&all[2..7]);
        assert!(codec.decode(&mut buf).expect("decode").is_none());
        assert!(buf.capacity() >= all.len());
        buf.extend_from_slice(&all[7..]);
        let item = codec.decode(&mut buf).expect("decode").expect("item");
        assert_eq!(item, Ok(Frame::Request(Request::new(1, "ping", json!({})))));
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_body_is_an_item_and_stream_continues() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&framed(b"not json"));
        buf.extend_from_slice(&framed(br#"{"type":"request","id":3,"command":"ping"}"#));
        let mut codec = FrameCodec::new();
        let first = codec.decode(&mut buf).expect("decode").expect("item");
        assert_eq!(first.expect_err("bad").id, None);
        let second = codec.decode(&mut buf).expect("decode").expect("item");
        assert_eq!(
            second,
            Ok(Frame::Request(Request::new(3, "ping", json!({}))))
        );
    }

    #[test]
    fn empty_body_is_bad_frame() {
        let mut buf = BytesMut::from(&framed(b"")[..]);
        let item = FrameCodec::new()
            .decode(&mut buf)
            .expect("decode")
            .expect("item");
        assert_eq!(item.expect_err("bad").id, None);
    }

    #[test]
    fn encoder_writes_prefix_and_refuses_oversized() {
        let frame = Frame::Response(Response::ok(2, json!({"a": "b"})));
        let mut codec = FrameCodec::new();
        let mut dst = BytesMut::new();
        codec.encode(&frame, &mut dst).expect("encode");
        assert_eq!(&dst[..], &framed(&frame.to_vec())[..]);

        let mut small = FrameCodec::with_max_frame_len(10);
        let mut dst = BytesMut::from(&b"xy"[..]);
        assert!(matches!(
            small.encode(&frame, &mut dst),
            Err(CodecError::BodyTooLarge { max: 10, .. })
        ));
        assert_eq!(&dst[..], b"xy");
        assert!(matches!(
            small.encode(Bytes::from_static(&[b' '; 11]), &mut dst),
            Err(CodecError::BodyTooLarge { len: 11, max: 10 })
        ));
        small
            .encode(Bytes::from_static(b"{}"), &mut dst)
            .expect("fits");
        assert_eq!(&dst[..], b"xy\0\0\0\x02{}");
    }
}
