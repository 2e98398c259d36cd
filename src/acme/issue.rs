//! One issuance against an ACME CA, through instant-acme: account (stored one, else a new
//! registration), order for the single name, TLS-ALPN-01 challenge (the certificate goes into
//! [`Challenges`], where the listeners find it), finalization with a fresh P-256 key and
//! download of the chain. Blocking: the futures instant-acme returns run on the calling thread
//! (our HTTP client finishes each request within the first poll; instant-acme's own timers are
//! never used). Errors read like the reference's, e.g.
//! `[a.example] solving challenge: a.example: [a.example] authorization failed: HTTP 403
//! urn:ietf:params:acme:error:unauthorized - ... (ca=https://ca/dir)`.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    Problem,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::challenge::{self, Challenges};
use super::http::Client;
use super::storage::{Lock, Storage, StoredAccount, StoredCert};

/// How long the CA may take to validate, or to issue after finalization.
const POLL_LIMIT: Duration = Duration::from_secs(90);

/// What one issuance needs.
pub struct Request<'a> {
    pub name: &'a str,
    pub email: &'a str,
    /// The ACME directory URL.
    pub ca: &'a str,
    pub storage: &'a Storage,
    pub http: &'a Client,
    pub challenges: &'a Arc<Challenges>,
    pub provider: &'a CryptoProvider,
    /// Kept fresh while the issuance runs.
    pub lock: &'a Lock,
}

/// A certificate just issued (and already stored).
pub struct Issued {
    pub cert: StoredCert,
}

/// Runs a whole issuance; the error is the cause only (the caller adds `<name>: obtaining
/// certificate: ` and the like).
pub fn obtain(req: &Request<'_>) -> Result<Issued, String> {
    let account = block_on(account(req))?;
    let result = block_on(order(req, &account));
    req.challenges.remove(req.name);
    result
}

/// Runs `fut` to completion on this thread. The futures here never wait on anything but our
/// blocking HTTP client, so a parked thread is woken only by a spurious wake-up.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(100)),
        }
    }
}

/// The stored account, else a new registration (stored before it is used).
async fn account(req: &Request<'_>) -> Result<Account, String> {
    let contact = format!("mailto:{}", req.email);
    let fail = |e: String| format!("registering account [{contact}] with server: {e}");
    let builder = || Account::builder_with_http(Box::new(req.http.clone()));
    if let Some(stored) = req.storage.load_account()? {
        let key = pkcs8_from_pem(&stored.key_pem)
            .map_err(|e| format!("loading stored account key: {e}"))?;
        if !stored.location.is_empty() {
            return builder()
                .from_parts(stored.location, key, req.ca.to_string())
                .await
                .map_err(|e| fail(e.to_string()));
        }
        // A key without its account URL: find the account by key at the CA.
        let key_der = PrivateKeyDer::Pkcs8(key.clone_key());
        let signer = instant_acme::Key::from_pkcs8_der(key).map_err(|e| fail(e.to_string()))?;
        let (account, _) = builder()
            .create_from_key((signer, key_der), req.ca.to_string())
            .await
            .map_err(|e| fail(e.to_string()))?;
        req.storage.save_account(&StoredAccount {
            location: account.id().to_string(),
            key_pem: stored.key_pem,
        })?;
        return Ok(account);
    }
    let contacts = [contact.as_str()];
    let (account, credentials) = builder()
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            req.ca.to_string(),
            None,
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
    let key_pem = pem("PRIVATE KEY", credentials.private_key().secret_pkcs8_der());
    req.storage.save_account(&StoredAccount {
        location: account.id().to_string(),
        key_pem,
    })?;
    Ok(account)
}

/// Order, challenge, finalize, download, store.
async fn order(req: &Request<'_>, account: &Account) -> Result<Issued, String> {
    let name = req.name;
    let ident = [Identifier::Dns(name.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&ident))
        .await
        .map_err(|e| format!("creating new order: {e}"))?;
    req.lock.refresh();
    let solving = |e: String| format!("[{name}] solving challenge: {name}: [{name}] {e}");

    // Put up the challenge certificate for every pending authorization, then tell the CA.
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.map_err(|e| solving(e.to_string()))?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => return Err(solving(format!("authorization is {other:?}"))),
        }
        let Some(mut chall) = authz.challenge(ChallengeType::TlsAlpn01) else {
            return Err(solving("the CA offered no tls-alpn-01 challenge".into()));
        };
        let digest = chall.key_authorization().digest();
        let cert = challenge::certificate(name, digest.as_ref(), req.provider).map_err(&solving)?;
        req.challenges.insert(name, cert);
        chall
            .set_ready()
            .await
            .map_err(|e| solving(e.to_string()))?;
    }

    // Wait for the validation.
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        let state = order.refresh().await.map_err(|e| solving(e.to_string()))?;
        match state.status {
            OrderStatus::Ready | OrderStatus::Valid | OrderStatus::Processing => break,
            OrderStatus::Invalid => {
                return Err(solving(authorization_failure(&mut order, req.ca).await));
            }
            OrderStatus::Pending => {}
        }
        if started.elapsed() > POLL_LIMIT {
            return Err(solving("timed out waiting for the CA to validate".into()));
        }
        req.lock.refresh();
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    req.challenges.remove(name);

    // Finalize with a new key, then fetch the chain.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    if order.state().status == OrderStatus::Ready {
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("[{name}] finalizing order: {e}"))?;
    }
    let started = Instant::now();
    let chain = loop {
        match order.certificate().await {
            Ok(Some(chain)) => break chain,
            Ok(None) if started.elapsed() < POLL_LIMIT => {
                req.lock.refresh();
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(None) => return Err(format!("[{name}] timed out waiting for the certificate")),
            Err(e) => return Err(format!("[{name}] downloading certificate: {e}")),
        }
    };
    let cert = StoredCert {
        chain_pem: chain.into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
    };
    let cert_url = order.state().certificate.clone().unwrap_or_default();
    req.storage
        .save_cert(&cert, &cert_url, req.ca, account.id())?;
    Ok(Issued { cert })
}

/// Why an order became invalid: the first failed challenge's problem, as the reference words
/// it: `authorization failed: HTTP 403 urn:...:unauthorized - <detail> (ca=<url>)`.
async fn authorization_failure(order: &mut instant_acme::Order, ca: &str) -> String {
    let mut authzs = order.authorizations();
    while let Some(Ok(mut authz)) = authzs.next().await {
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        if let Some(problem) = state.challenges.iter().find_map(|c| c.error.as_ref()) {
            return format!("authorization failed: {} (ca={ca})", problem_text(problem));
        }
    }
    format!("authorization failed: the order became invalid (ca={ca})")
}

fn problem_text(p: &Problem) -> String {
    format!(
        "HTTP {} {} - {}",
        p.status.unwrap_or(0),
        p.r#type
            .as_deref()
            .unwrap_or("urn:ietf:params:acme:error:unknown"),
        p.detail.as_deref().unwrap_or_default()
    )
}

/// A PKCS#8 key from a PEM key file: `PRIVATE KEY` as is, `EC PRIVATE KEY` (P-256, as the
/// reference stores account keys) wrapped into PKCS#8.
pub fn pkcs8_from_pem(pem_data: &[u8]) -> Result<PrivatePkcs8KeyDer<'static>, String> {
    match PrivateKeyDer::from_pem_slice(pem_data).map_err(|e| e.to_string())? {
        PrivateKeyDer::Pkcs8(k) => Ok(k),
        PrivateKeyDer::Sec1(k) => Ok(PrivatePkcs8KeyDer::from(wrap_p256_sec1(
            k.secret_sec1_der(),
        ))),
        _ => Err("unsupported account key type (want ECDSA P-256)".into()),
    }
}

/// PrivateKeyInfo { version 0, id-ecPublicKey + prime256v1, OCTET STRING { sec1 } }.
fn wrap_p256_sec1(sec1: &[u8]) -> Vec<u8> {
    const ALG: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
        0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut inner = vec![0x02, 0x01, 0x00];
    inner.extend_from_slice(ALG);
    inner.push(0x04);
    der_len(&mut inner, sec1.len());
    inner.extend_from_slice(sec1);
    let mut out = vec![0x30];
    der_len(&mut out, inner.len());
    out.extend(inner);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
}

/// PEM text for one DER block.
pub fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    use base64ct::Encoding;
    let b64 = base64ct::Base64::encode_string(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_style_ec_account_key_becomes_pkcs8() {
        // What Go's x509.MarshalECPrivateKey writes: SEC1 with the curve and public key.
        let dir = std::env::temp_dir().join(format!("gt-acme-sec1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.key");
        let st = std::process::Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&path)
            .status()
            .expect("openssl must be installed");
        assert!(st.success());
        let sec1 = std::fs::read(&path).unwrap();
        assert!(String::from_utf8_lossy(&sec1).contains("BEGIN EC PRIVATE KEY"));
        let pkcs8 = pkcs8_from_pem(&sec1).unwrap();
        instant_acme::Key::from_pkcs8_der(pkcs8).expect("instant-acme accepts the wrapped key");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let text = String::from_utf8(pem("X", &[0u8; 60])).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN X-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[3], "-----END X-----");
    }
}
