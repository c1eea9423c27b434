//! The one CRI call a kubelet makes to pull an image, `runtime.v1.ImageService/PullImage`, sent
//! over containerd's socket. Unlike `ctr` (whose client does the registry HTTP itself, with its
//! own `--hosts-dir`), a CRI pull is done by the daemon with the registry configuration of its
//! `config.toml`: the only way to see what a Kubernetes node would do.
//!
//! gRPC is HTTP/2 with 5-byte framed protobuf messages; the two messages involved are tiny, so
//! they are written and read by hand here.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};

/// Pulls `image` (`host:port/repo:tag`) through the daemon's CRI plugin; returns the image
/// reference the daemon answers with (`sha256:<config digest>`).
pub async fn pull_image(socket: &Path, image: &str, timeout: Duration) -> Result<String> {
    tokio::time::timeout(timeout, pull(socket, image))
        .await
        .map_err(|_| anyhow!("CRI pull of {image} took longer than {timeout:?}"))?
}

async fn pull(socket: &Path, image: &str) -> Result<String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (client, connection) = h2::client::handshake(stream).await.context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.context("HTTP/2 connection")?;
    let request = http::Request::builder()
        .method("POST")
        .uri("http://localhost/runtime.v1.ImageService/PullImage")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (response, mut send) = client.send_request(request, false)?;
    send.send_data(grpc_frame(&pull_image_request(image)), true)?;
    let response = response.await.context("PullImage response")?;
    let (head, mut body) = response.into_parts();
    let mut received = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    // A failed call may answer with headers only ("trailers-only").
    let trailers = body.trailers().await?.unwrap_or_default();
    let status = |name: &str| {
        trailers
            .get(name)
            .or_else(|| head.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    match status("grpc-status").as_deref() {
        Some("0") => {}
        code => bail!(
            "CRI PullImage of {image} failed: grpc-status {code:?}: {}",
            status("grpc-message").unwrap_or_default()
        ),
    }
    let message = unframe(received.freeze())?;
    string_field(&message, 1).ok_or_else(|| anyhow!("PullImage answered no image_ref"))
}

/// `PullImageRequest { image: ImageSpec { image: <name> } }`.
fn pull_image_request(image: &str) -> Vec<u8> {
    length_delimited(1, &length_delimited(1, image.as_bytes()))
}

fn length_delimited(field: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(field << 3) | 2];
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(buf: &mut Bytes) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

fn unframe(mut body: Bytes) -> Result<Bytes> {
    if body.len() < 5 || body[0] != 0 {
        bail!("not an uncompressed gRPC message ({} bytes)", body.len());
    }
    body.advance(1);
    let len = body.get_u32() as usize;
    if body.len() < len {
        bail!("gRPC message cut short");
    }
    Ok(body.split_to(len))
}

/// The first length-delimited field `field` of a protobuf message, as text.
fn string_field(message: &Bytes, field: u64) -> Option<String> {
    let mut buf = message.clone();
    while buf.has_remaining() {
        let key = read_varint(&mut buf)?;
        let len = match key & 7 {
            0 => {
                read_varint(&mut buf)?;
                continue;
            }
            2 => read_varint(&mut buf)? as usize,
            _ => return None,
        };
        if buf.remaining() < len {
            return None;
        }
        let value = buf.split_to(len);
        if key >> 3 == field {
            return String::from_utf8(value.to_vec()).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let request = pull_image_request("127.0.0.1:5000/a/b:v1");
        assert_eq!(&request[..4], &[0x0a, 23, 0x0a, 21]);
        let answer = length_delimited(1, b"sha256:abc");
        let framed = grpc_frame(&answer);
        let message = unframe(framed).unwrap();
        assert_eq!(string_field(&message, 1).as_deref(), Some("sha256:abc"));
        let mut long = Vec::new();
        varint(300, &mut long);
        assert_eq!(read_varint(&mut Bytes::from(long)), Some(300));
    }
}
