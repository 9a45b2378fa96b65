//! Pre-signed storage URLs are credentials of their own: the type makes displaying one safe by
//! construction (only scheme, host and path are shown), so no log line or error message can leak a
//! signature, and nothing persists one.

use std::fmt;

use reqwest::Url;

/// A pre-signed storage URL from the download route. It is a credential of its own: only its
/// host and path are ever displayed, and it is never persisted (a later run resolves afresh).
#[derive(Clone)]
pub struct SignedUrl {
    url: Url,
}

impl SignedUrl {
    /// The full URL, to send a request to. Never print it.
    pub fn as_url(&self) -> &Url {
        &self.url
    }

    /// A URL accepted as-is (previews on the image CDN need no resolve).
    pub fn direct(url: Url) -> Self {
        SignedUrl { url }
    }
}

impl fmt::Display for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or("?"),
            self.url.path()
        )
    }
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_never_display_their_query() {
        let url = SignedUrl::direct(
            Url::parse("https://b2.civitai.com/file/x/y.safetensors?Authorization=SECRET").unwrap(),
        );
        assert_eq!(
            url.to_string(),
            "https://b2.civitai.com/file/x/y.safetensors"
        );
        assert!(!format!("{url:?}").contains("SECRET"));
    }
}
