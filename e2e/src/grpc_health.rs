//! gRPC's health check (`grpc.health.v1.Health/Check`) on the wire, by hand: the test
//! app's health server and the kubelet-like prober need only its two one-field
//! messages, so neither prost nor tonic is worth their compile time. Written apart
//! from the proxy's own encoder, so the e2e checks one against the other.

use bytes::{BufMut, Bytes, BytesMut};

/// The method's path.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: u64 = 1;
/// `HealthCheckResponse.ServingStatus.NOT_SERVING`.
pub const NOT_SERVING: u64 = 2;

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A gRPC length-prefixed message (uncompressed).
fn framed(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The message of the first gRPC frame in `body`.
fn unframed(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0).then_some(())?;
    rest.get(4..4 + len)
}

/// A protobuf field's value: a varint, or the bytes of any other wire type.
type Value<'a> = Result<u64, &'a [u8]>;

/// The fields of a protobuf message: (number, value).
fn fields(mut buf: &[u8]) -> Option<Vec<(u64, Value<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let value = match key & 7 {
            0 => Ok(varint(&mut buf)?),
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let (v, rest) = (buf.get(..len)?, buf.get(len..)?);
                buf = rest;
                Err(v)
            }
            1 | 5 => {
                let len = if key & 7 == 1 { 8 } else { 4 };
                let (v, rest) = (buf.get(..len)?, buf.get(len..)?);
                buf = rest;
                Err(v)
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    Some(out)
}

/// A framed `HealthCheckRequest{service}` (an empty service is the field's default,
/// left out as proto3 does).
pub fn request(service: &str) -> Bytes {
    let mut msg = BytesMut::new();
    if !service.is_empty() {
        msg.put_u8(0x0a);
        put_varint(&mut msg, service.len() as u64);
        msg.put_slice(service.as_bytes());
    }
    framed(&msg)
}

/// The service of a framed `HealthCheckRequest`; `None` when malformed.
pub fn decode_request(body: &[u8]) -> Option<String> {
    let mut service = String::new();
    for (number, value) in fields(unframed(body)?)? {
        if let (1, Err(bytes)) = (number, value) {
            service = String::from_utf8(bytes.to_vec()).ok()?;
        }
    }
    Some(service)
}

/// A framed `HealthCheckResponse{status}`.
pub fn response(status: u64) -> Bytes {
    let mut msg = BytesMut::new();
    if status != 0 {
        msg.put_u8(0x08);
        put_varint(&mut msg, status);
    }
    framed(&msg)
}

/// The status of a framed `HealthCheckResponse` (0, UNKNOWN, when absent).
pub fn decode_response(body: &[u8]) -> Option<u64> {
    let mut status = 0;
    for (number, value) in fields(unframed(body)?)? {
        if let (1, Ok(v)) = (number, value) {
            status = v;
        }
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_match_protobufs_encoding() {
        // protoc --encode=grpc.health.v1.HealthCheckRequest <<< 'service: "shop"'
        assert_eq!(&request("shop")[..], b"\0\0\0\0\x06\x0a\x04shop");
        assert_eq!(&request("")[..], b"\0\0\0\0\0");
        assert_eq!(&response(SERVING)[..], b"\0\0\0\0\x02\x08\x01");
        assert_eq!(decode_request(&request("a.b.Svc")).unwrap(), "a.b.Svc");
        assert_eq!(decode_response(&response(NOT_SERVING)), Some(NOT_SERVING));
        assert_eq!(decode_response(b"\0\0\0\0\0"), Some(0));
        assert_eq!(decode_response(b"\0\0\0\0\x05\x08"), None, "truncated");
    }
}
