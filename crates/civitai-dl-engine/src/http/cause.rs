//! Why a request got no answer, in words a user can act on. reqwest's own message is "error
//! sending request" whatever happened; the reason sits several errors down its source chain
//! (hyper, then an `io::Error`, then rustls or the resolver), so it is looked up there.
//!
//! The cause also decides whether waiting can help: a refused certificate or a host name that
//! does not exist stays so on the next attempt, and retrying them only made a run take minutes
//! to fail with an empty message.

use std::error::Error;
use std::fmt;
use std::io;

/// What kept a request from getting an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The server's certificate was refused (unknown issuer, wrong name, expired, …).
    Certificate(String),
    /// Another TLS failure (a handshake the far end broke off, a protocol mismatch).
    Tls(String),
    /// The host name does not exist.
    NoSuchHost(String),
    /// Nothing accepted the connection.
    Refused,
    /// No answer in time.
    Timeout,
    /// Anything else: the chain of messages.
    Other(String),
}

impl Cause {
    /// The cause of a failed request.
    pub fn of(error: &reqwest::Error) -> Cause {
        if error.is_timeout() {
            return Cause::Timeout;
        }
        Cause::of_chain(error)
    }

    /// The first cause named along `error`'s source chain, else the chain's messages.
    fn of_chain(error: &(dyn Error + 'static)) -> Cause {
        let mut messages: Vec<String> = Vec::new();
        let mut next: Option<&(dyn Error + 'static)> = Some(error);
        while let Some(current) = next {
            if let Some(cause) = Cause::of_one(current) {
                return cause;
            }
            let text = current.to_string();
            if !WRAPPERS.contains(&text.as_str()) && !messages.iter().any(|m| m.contains(&text)) {
                messages.push(text);
            }
            next = current.source();
        }
        let chain = messages.join(": ");
        if NO_SUCH_HOST.iter().any(|m| chain.contains(m)) {
            return Cause::NoSuchHost(chain);
        }
        Cause::Other(chain)
    }

    /// The cause one error of the chain names, if it names one.
    fn of_one(error: &(dyn Error + 'static)) -> Option<Cause> {
        let mut inner = error;
        // An io::Error's source() skips the error it wraps, and the TLS connector wraps its
        // io::Error in another one, so look inside each here.
        while let Some(io) = inner.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::ConnectionRefused {
                return Some(Cause::Refused);
            }
            inner = io.get_ref()?;
        }
        inner.downcast_ref::<rustls::Error>().map(Cause::of_tls)
    }

    fn of_tls(error: &rustls::Error) -> Cause {
        match error {
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                Cause::Certificate(error.to_string())
            }
            other => Cause::Tls(other.to_string()),
        }
    }

    /// Whether the same request can only fail the same way again.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Cause::Certificate(_) | Cause::NoSuchHost(_))
    }
}

/// What reqwest and hyper say around every connection failure: no information, left out.
const WRAPPERS: [&str; 2] = ["error sending request", "client error (Connect)"];

/// How resolvers say that a name does not exist (glibc, Windows, macOS), as opposed to a
/// resolver that could not be asked (no network yet), which may heal.
const NO_SUCH_HOST: [&str; 3] = [
    "Name or service not known",
    "No such host is known",
    "nodename nor servname provided",
];

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Certificate(detail) => write!(
                f,
                "the server's TLS certificate was refused ({detail}). If a proxy or antivirus \
                 inspects HTTPS on this machine, trust its CA with SSL_CERT_FILE=/path/to/ca.pem; \
                 otherwise check HTTPS_PROXY and the system clock"
            ),
            Cause::Tls(detail) => write!(
                f,
                "the TLS handshake failed ({detail}); check HTTPS_PROXY, or whether something \
                 between here and the server intercepts HTTPS"
            ),
            Cause::NoSuchHost(detail) => write!(
                f,
                "the host name does not exist ({detail}); check the address (--base-url) and \
                 this machine's DNS"
            ),
            Cause::Refused => write!(
                f,
                "connection refused: nothing answers at that address, or a firewall rejects it"
            ),
            Cause::Timeout => write!(f, "timed out"),
            Cause::Other(chain) => write!(f, "{chain}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose source is `inner`, as hyper wraps what it got from below.
    #[derive(Debug)]
    struct Wrapped(Box<dyn Error + Send + Sync>);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "client error (Connect)")
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self.0.as_ref())
        }
    }

    #[test]
    fn a_refused_certificate_inside_an_io_error_is_found_and_permanent() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, tls);
        let rewrapped = io::Error::other(io);
        let cause = Cause::of_chain(&Wrapped(Box::new(rewrapped)));
        assert!(
            matches!(&cause, Cause::Certificate(d) if d.contains("UnknownIssuer")),
            "{cause:?}"
        );
        assert!(cause.is_permanent());
        assert!(cause.to_string().contains("SSL_CERT_FILE"), "{cause}");
    }

    #[test]
    fn other_tls_failures_and_refusals_may_heal() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        );
        let tls = Cause::of_chain(&Wrapped(Box::new(io)));
        assert!(
            matches!(tls, Cause::Tls(_)) && !tls.is_permanent(),
            "{tls:?}"
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(Cause::of_chain(&Wrapped(Box::new(refused))), Cause::Refused);
        assert!(!Cause::Refused.is_permanent());
    }

    #[test]
    fn only_a_name_that_does_not_exist_is_a_permanent_dns_failure() {
        let gone =
            io::Error::other("failed to lookup address information: Name or service not known");
        let cause = Cause::of_chain(&Wrapped(Box::new(gone)));
        assert!(
            matches!(cause, Cause::NoSuchHost(_)) && cause.is_permanent(),
            "{cause:?}"
        );
        let offline = io::Error::other(
            "failed to lookup address information: Temporary failure in name resolution",
        );
        let cause = Cause::of_chain(&Wrapped(Box::new(offline)));
        assert!(!cause.is_permanent(), "{cause:?}");
        assert!(
            NO_SUCH_HOST
                .iter()
                .all(|m| !"Temporary failure in name resolution".contains(m))
        );
    }
}
