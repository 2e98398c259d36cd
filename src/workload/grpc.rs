//! The one gRPC call we make: `FetchX509SVID`, a server-streaming call on the Workload API,
//! spoken as gRPC over cleartext HTTP/2 (h2) on a UNIX or TCP socket. Runs only inside the
//! Workload API thread's own small tokio runtime; never on the data path. Errors are worded as
//! gRPC clients word them (`rpc error: code = Unavailable desc = …`), since that is what
//! operators search for.

use std::fmt;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};

use crate::net::strip_os_error;

/// Where the agent listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix {}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp {addr}"),
        }
    }
}

/// The gRPC status codes (the numbers are the wire values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Ok = 0,
    Canceled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    fn from_wire(n: u32) -> Code {
        use Code::*;
        [
            Ok,
            Canceled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ]
        .get(n as usize)
        .copied()
        .unwrap_or(Unknown)
    }
}

/// Why a watch ended: the stream is never meant to close, so every end but [`Stopped`]
/// (asked for by the caller) is an error.
///
/// [`Stopped`]: WatchError::Stopped
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchError {
    /// The agent (or the transport) ended the call with a status.
    Status { code: Code, message: String },
    /// The agent closed the stream with status OK.
    Eof,
    /// The message handler asked to stop.
    Stopped,
}

impl WatchError {
    fn status(code: Code, message: impl Into<String>) -> WatchError {
        WatchError::Status {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> Option<Code> {
        match self {
            WatchError::Status { code, .. } => Some(*code),
            WatchError::Eof | WatchError::Stopped => None,
        }
    }
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchError::Status { code, message } => {
                write!(f, "rpc error: code = {code:?} desc = {message}")
            }
            WatchError::Eof => f.write_str("EOF"),
            WatchError::Stopped => f.write_str("stopped"),
        }
    }
}

/// The largest message accepted, as gRPC clients default to.
const MAX_MESSAGE: usize = 4 << 20;
/// Connecting and the HTTP/2 preface must finish within this (gRPC's minimum connect timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
pub const METHOD: &str = "/SpiffeWorkloadAPI/FetchX509SVID";

/// The stream is an `AsyncRead + AsyncWrite` over either socket kind.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn connect(endpoint: &Endpoint) -> Result<Box<dyn Io>, WatchError> {
    let dial_error = |e: std::io::Error| {
        let (net, addr) = match endpoint {
            Endpoint::Unix(p) => ("unix", p.display().to_string()),
            Endpoint::Tcp(a) => ("tcp", a.to_string()),
        };
        WatchError::status(
            Code::Unavailable,
            format!(
                "connection error: desc = \"transport: Error while dialing: dial {net} {addr}: connect: {}\"",
                strip_os_error(&e)
            ),
        )
    };
    Ok(match endpoint {
        Endpoint::Unix(path) => Box::new(
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(dial_error)?,
        ),
        Endpoint::Tcp(addr) => {
            let s = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(dial_error)?;
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
    })
}

/// Aborts the connection task when the call is done or dropped (e.g. by a timeout), which
/// closes the socket.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens one `FetchX509SVID` stream and hands every message's bytes to `on_message`, in order,
/// until the stream ends or `on_message` returns `Break` ([`WatchError::Stopped`]).
pub async fn watch(
    endpoint: &Endpoint,
    mut on_message: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> WatchError {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let io = connect(endpoint).await?;
        h2::client::Builder::new()
            .max_header_list_size(64 << 10)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| transport_error(&e))
    })
    .await;
    let (client, connection) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return e,
        Err(_) => {
            return WatchError::status(
                Code::Unavailable,
                "connection error: desc = \"transport: Error while dialing: i/o timeout\"",
            );
        }
    };
    // The connection task drives the socket; it ends with the call.
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    call(client, &mut on_message).await
}

async fn call(
    client: h2::client::SendRequest<Bytes>,
    on_message: &mut impl FnMut(&[u8]) -> ControlFlow<()>,
) -> WatchError {
    let mut client = match client.ready().await {
        Ok(c) => c,
        Err(e) => return transport_error(&e),
    };
    // The authority is not used on a socket of its own; gRPC clients send "localhost".
    let request = Request::post(format!("http://localhost{METHOD}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(
            "user-agent",
            concat!("ghostunnel/", env!("CARGO_PKG_VERSION")),
        )
        .header("workload.spiffe.io", "true")
        .body(())
        .expect("static request is valid");
    let (response, mut send) = match client.send_request(request, false) {
        Ok(pair) => pair,
        Err(e) => return transport_error(&e),
    };
    // An empty X509SVIDRequest: uncompressed flag, zero length.
    if let Err(e) = send.send_data(Bytes::from_static(&[0; 5]), true) {
        return transport_error(&e);
    }
    let response = match response.await {
        Ok(r) => r,
        Err(e) => return transport_error(&e),
    };
    let (head, mut body) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return WatchError::status(
            http_status_code(head.status),
            format!(
                "unexpected HTTP status code received from server: {}",
                head.status
            ),
        );
    }
    // A call that fails at once answers with headers only ("Trailers-Only").
    if head.headers.contains_key("grpc-status") {
        return status_of(&head.headers);
    }
    let content_type = head
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/grpc") {
        return WatchError::status(
            Code::Unknown,
            format!("unexpected content-type \"{content_type}\""),
        );
    }
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return transport_error(&e),
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        while buf.len() >= 5 {
            if buf[0] != 0 {
                return WatchError::status(
                    Code::Internal,
                    "grpc: compressed message received but no compression was negotiated",
                );
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > MAX_MESSAGE {
                return WatchError::status(
                    Code::ResourceExhausted,
                    format!("grpc: received message larger than max ({len} vs. {MAX_MESSAGE})"),
                );
            }
            if buf.len() < 5 + len {
                break;
            }
            if on_message(&buf[5..5 + len]).is_break() {
                return WatchError::Stopped;
            }
            buf.drain(..5 + len);
        }
    }
    let trailers = match body.trailers().await {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => return transport_error(&e),
    };
    if !buf.is_empty() {
        return WatchError::status(Code::Internal, "unexpected EOF");
    }
    if !trailers.contains_key("grpc-status") {
        return WatchError::status(
            Code::Internal,
            "server closed the stream without sending trailers",
        );
    }
    status_of(&trailers)
}

/// The call's end as its `grpc-status` and `grpc-message` say.
fn status_of(headers: &HeaderMap) -> WatchError {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(Code::Unknown, Code::from_wire);
    if code == Code::Ok {
        return WatchError::Eof;
    }
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    WatchError::status(code, message)
}

/// `grpc-message` is percent-encoded UTF-8.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).and_then(|&b| hex(b)),
            raw.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// gRPC's mapping of HTTP statuses for responses that are not gRPC at all.
fn http_status_code(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// An HTTP/2 or socket failure as a gRPC status.
fn transport_error(e: &h2::Error) -> WatchError {
    if let Some(reason) = e.reason() {
        if e.is_remote() && !e.is_go_away() {
            // RST_STREAM codes, as gRPC maps them.
            let code = match reason {
                h2::Reason::REFUSED_STREAM => Code::Unavailable,
                h2::Reason::CANCEL => Code::Canceled,
                h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
                h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
                _ => Code::Internal,
            };
            return WatchError::status(
                code,
                format!("stream terminated by RST_STREAM with error code: {reason:?}"),
            );
        }
        if e.is_go_away() {
            return WatchError::status(
                Code::Unavailable,
                format!("the connection is draining due to a GOAWAY ({reason:?})"),
            );
        }
    }
    match e.get_io() {
        // The agent closed the connection (h2 reports the stream's end as a broken pipe).
        Some(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            WatchError::status(Code::Unavailable, "error reading from server: EOF")
        }
        Some(io) if io.kind() == std::io::ErrorKind::ConnectionReset => WatchError::status(
            Code::Unavailable,
            "error reading from server: read: connection reset by peer",
        ),
        Some(io) => WatchError::status(
            Code::Unavailable,
            format!("error reading from server: {}", strip_os_error(io)),
        ),
        None => WatchError::status(
            Code::Unavailable,
            format!("connection error: desc = \"{e}\""),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_like_grpc_clients_print_them() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "3".parse().unwrap());
        h.insert(
            "grpc-message",
            "security header missing from request".parse().unwrap(),
        );
        assert_eq!(
            status_of(&h).to_string(),
            "rpc error: code = InvalidArgument desc = security header missing from request"
        );
        h.insert("grpc-status", "7".parse().unwrap());
        h.insert(
            "grpc-message",
            "no identity issued%3A 100%25".parse().unwrap(),
        );
        assert_eq!(
            status_of(&h).to_string(),
            "rpc error: code = PermissionDenied desc = no identity issued: 100%"
        );
        h.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(status_of(&h), WatchError::Eof);
        h.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(status_of(&h).code(), Some(Code::Unknown));
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }
}
