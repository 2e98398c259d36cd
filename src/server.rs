//! Server mode: TLS in, plaintext out (docs/behaviour.md §7.2). Each connection completes its TLS
//! handshake (with client authentication) under `--connect-timeout`, then the backend is dialled
//! within the same budget, an optional PROXY v2 header is written, and the pipe runs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use rustls::{Connection, ServerConnection};

use crate::config::{ProxyProtocolMode, Timeouts};
use crate::logging::{CONN_ERRS, HANDSHAKE_ERRS};
use crate::metrics::Metrics;
use crate::net::{self, Addr, Stream};
use crate::proxy::{self, Connector, Proxy};
use crate::relay::{self, Endpoint, HandshakeError};
use crate::tls::{self, Accepted, Reloadable, ServerTls};

/// The server-mode connector.
pub struct Server {
    pub tls: Arc<Reloadable<ServerTls>>,
    pub target: Addr,
    pub timeouts: Timeouts,
    pub proxy_protocol: Option<ProxyProtocolMode>,
}

impl Connector for Server {
    fn handle(&self, mut inbound: Stream, proxy: &Proxy) {
        let started = Instant::now();
        let deadline = started + self.timeouts.connect;
        let peer = inbound.peer_ip_port();
        let ctx = self.tls.current();
        // With ACME TLS-ALPN-01, the ClientHello picks the configuration.
        let server = match &ctx.challenge {
            None => ServerConnection::new(ctx.config.clone()).map_err(HandshakeError::Tls),
            Some(challenge) => {
                relay::read_client_hello(&mut inbound, deadline, proxy.cancel_flag()).and_then(
                    |hello| {
                        let config = match tls::wants_challenge(&hello.client_hello()) {
                            true => challenge.clone(),
                            false => ctx.config.clone(),
                        };
                        hello
                            .into_connection(config)
                            .map_err(|(e, _)| HandshakeError::Tls(e))
                    },
                )
            }
        };
        let handshake = server.and_then(|c| {
            let mut conn = Connection::Server(c);
            relay::handshake(&mut inbound, &mut conn, deadline, proxy.cancel_flag())?;
            let accepted = match &conn {
                Connection::Server(c) => ctx.accepted(c).map_err(HandshakeError::Tls)?,
                Connection::Client(_) => Accepted::Peer,
            };
            Ok((conn, accepted))
        });
        let metrics = proxy.metrics();
        if let Some(m) = metrics {
            m.handshake.record(started.elapsed());
        }
        // Every failure before the pipe counts as an accept error (docs/behaviour.md §7.5).
        let failed = || {
            if let Some(m) = metrics {
                Metrics::inc(&m.accept_error);
            }
        };
        let conn = match handshake {
            Ok((conn, Accepted::Peer)) => conn,
            // An ACME TLS-ALPN-01 validation: the handshake was the answer.
            Ok((_, Accepted::Challenge)) => return,
            Err(e) => {
                if let (Some(m), HandshakeError::Timeout) = (metrics, &e) {
                    Metrics::inc(&m.accept_timeout);
                }
                failed();
                log::warn!(target: HANDSHAKE_ERRS, "error on TLS handshake from {peer}: {e}");
                return;
            }
        };
        let mut outbound = match net::dial(&self.target, deadline) {
            Ok(s) => s,
            Err(e) => {
                failed();
                log::error!(target: CONN_ERRS, "error on dial: {e}");
                return;
            }
        };
        if let Some(mode) = self.proxy_protocol {
            let header = match proxy_header(mode, &inbound, &conn) {
                Ok(h) => h,
                Err(e) => {
                    failed();
                    log::error!(target: CONN_ERRS, "error building proxy header: {e}");
                    return;
                }
            };
            // Within what is left of the connect budget: a backend that does not read must
            // not hold the worker.
            let left = deadline.saturating_duration_since(Instant::now());
            let written = outbound
                .set_write_timeout(Some(left.max(std::time::Duration::from_millis(1))))
                .and_then(|()| std::io::Write::write_all(&mut outbound, &header))
                .and_then(|()| outbound.set_write_timeout(None));
            if let Err(e) = written {
                failed();
                let e = net::timed_io_error(&e);
                log::error!(target: CONN_ERRS, "error writing proxy header: {e}");
                return;
            }
        }
        let mut inbound = Endpoint::tls(inbound, conn);
        let mut outbound = Endpoint::plain(outbound);
        proxy::pipe(
            &mut inbound,
            &mut outbound,
            &self.timeouts,
            started,
            metrics,
        );
    }
}

const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// Builds a PROXY protocol v2 header for this connection (docs/behaviour.md §7.4).
fn proxy_header(
    mode: ProxyProtocolMode,
    inbound: &Stream,
    conn: &Connection,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let family = match inbound {
        Stream::Tcp(s) => {
            let src = s.peer_addr().map_err(|e| e.to_string())?;
            let dst = s.local_addr().map_err(|e| e.to_string())?;
            match (unmap(src), unmap(dst)) {
                (SocketAddr::V4(a), SocketAddr::V4(b)) => {
                    body.extend_from_slice(&a.ip().octets());
                    body.extend_from_slice(&b.ip().octets());
                    body.extend_from_slice(&a.port().to_be_bytes());
                    body.extend_from_slice(&b.port().to_be_bytes());
                    0x11
                }
                (a, b) => {
                    body.extend_from_slice(&v6(a.ip()));
                    body.extend_from_slice(&v6(b.ip()));
                    body.extend_from_slice(&a.port().to_be_bytes());
                    body.extend_from_slice(&b.port().to_be_bytes());
                    0x21
                }
            }
        }
        Stream::Unix(s) => {
            let src = s.peer_addr().map_err(|e| e.to_string())?;
            let dst = s.local_addr().map_err(|e| e.to_string())?;
            body.extend_from_slice(&unix_path(&src)?);
            body.extend_from_slice(&unix_path(&dst)?);
            0x31
        }
    };
    if mode != ProxyProtocolMode::Conn {
        if let Connection::Server(c) = conn {
            if let Some(alpn) = c.alpn_protocol() {
                tlv(&mut body, 0x01, alpn)?;
            }
            if let Some(sni) = c.server_name() {
                tlv(&mut body, 0x02, sni.as_bytes())?;
            }
        }
        let mut ssl = Vec::new();
        let leaf = conn.peer_certificates().and_then(|c| c.first());
        let full = mode == ProxyProtocolMode::TlsFull && leaf.is_some();
        ssl.push(if full { 0x07 } else { 0x01 });
        ssl.extend_from_slice(&[0, 0, 0, 0]);
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
            _ => "TLS 1.2",
        };
        tlv(&mut ssl, 0x21, version.as_bytes())?;
        if let (true, Some(leaf)) = (full, leaf) {
            if let Some(cn) = common_name(leaf) {
                tlv(&mut ssl, 0x22, cn.as_bytes())?;
            }
            tlv(&mut ssl, 0x28, leaf)?;
        }
        tlv(&mut body, 0x20, &ssl)?;
    }
    let len = u16::try_from(body.len()).map_err(|_| {
        format!(
            "header of {} bytes exceeds the PROXY v2 limit of 65535",
            body.len()
        )
    })?;
    let mut header = SIGNATURE.to_vec();
    header.push(0x21);
    header.push(family);
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&body);
    Ok(header)
}

/// Appends a TLV; a value that does not fit its 16-bit length fails the header (fail closed:
/// a truncated length would hand the backend a corrupt header and shift the payload).
fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) -> Result<(), String> {
    let len = u16::try_from(value.len())
        .map_err(|_| format!("TLV 0x{kind:02x} of {} bytes exceeds 65535", value.len()))?;
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// A UNIX address as the 108-byte NUL-padded field: the path, `@<name>` for an abstract
/// address, `@` for an unnamed peer (as the reference prints them).
fn unix_path(addr: &std::os::unix::net::SocketAddr) -> Result<[u8; 108], String> {
    use std::os::linux::net::SocketAddrExt;
    let name = match (addr.as_pathname(), addr.as_abstract_name()) {
        (Some(path), _) => path.as_os_str().as_encoded_bytes().to_vec(),
        (None, Some(name)) => [b"@", name].concat(),
        (None, None) => b"@".to_vec(),
    };
    let mut field = [0u8; 108];
    field
        .get_mut(..name.len())
        .ok_or_else(|| format!("UNIX address of {} bytes exceeds 108", name.len()))?
        .copy_from_slice(&name);
    Ok(field)
}

/// An IPv4-mapped IPv6 address counts as IPv4.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The leaf's subject CommonName (the last one, as the ACL reads it).
fn common_name(der: &[u8]) -> Option<String> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let subject = &cert.tbs_certificate.subject;
    let cn = subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .rfind(|atv| atv.oid == der::oid::db::rfc4519::CN)?;
    String::from_utf8(cn.value.value().to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_values_fail_instead_of_truncating() {
        let mut out = Vec::new();
        tlv(&mut out, 0x28, &[0; 65535]).unwrap();
        assert_eq!(&out[..3], [0x28, 0xff, 0xff]);
        assert_eq!(
            tlv(&mut Vec::new(), 0x20, &[0; 65536]).unwrap_err(),
            "TLV 0x20 of 65536 bytes exceeds 65535"
        );
    }

    #[test]
    fn unix_fields_name_the_path_or_the_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;
        let field = unix_path(&SocketAddr::from_pathname("/run/gt.sock").unwrap()).unwrap();
        assert_eq!(&field[..13], b"/run/gt.sock\0");
        assert!(field[12..].iter().all(|&b| b == 0));
        let field = unix_path(&SocketAddr::from_abstract_name(b"gt").unwrap()).unwrap();
        assert_eq!(&field[..4], b"@gt\0");
        let longest = SocketAddr::from_abstract_name([b'x'; 107]).unwrap();
        assert_eq!(unix_path(&longest).unwrap()[107], b'x');
    }
}
