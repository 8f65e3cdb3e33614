//! The operator console: a page every meta node serves at `/console/`, built into the
//! binary (`console/index.html`, `console.js`, `console.css`; no build step, nothing loaded
//! from elsewhere).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/console` | redirect to `/console/` |
//! | GET | `/console/` | the page |
//! | GET | `/console/console.js`, `/console/console.css` | its script and style |
//!
//! The files hold no data, so they are public ([`crate::api::access`]); everything the page
//! shows or changes goes through the admin API (`/admin/v1/...`), which with auth on needs an
//! admin key: the page asks for one, keeps it in the tab's session storage and signs each
//! call with WebCrypto as `registry_common::auth::request_message` says. Browsers give
//! WebCrypto only to secure pages (https, or http on loopback), so with auth on and no TLS
//! the console works on `localhost` (or through a tunnel to it) only.
//!
//! The routes sit with the admin API (on `--admin-listen` when given), since the page calls
//! it on the address it was loaded from.

use axum::http::header::{self, HeaderName};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// Only this node's own script, style and admin API; no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

pub fn router() -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, &'static str); 6] = [
        (header::CONTENT_TYPE, content_type),
        // A new binary serves new files under the same names.
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_common::auth::{HDR_DATE, HDR_KEY, HDR_NONCE, HDR_SIGNATURE};

    #[test]
    fn the_page_loads_only_what_the_router_serves() {
        assert!(INDEX_HTML.contains(r#"src="console.js""#));
        assert!(INDEX_HTML.contains(r#"href="console.css""#));
        assert!(
            !INDEX_HTML.contains("<script>"),
            "inline script: the CSP forbids it"
        );
        // The SVG namespace is a name, not something loaded.
        let js = CONSOLE_JS.replace("'http://www.w3.org/2000/svg'", "");
        for text in [INDEX_HTML, js.as_str(), CONSOLE_CSS] {
            for external in ["http://", "https://", "@import", "url("] {
                assert!(!text.contains(external), "refers to {external}");
            }
        }
    }

    #[test]
    fn the_script_signs_like_the_rust_signer() {
        // The browser's message must be `request_message`'s, field for field.
        let message = registry_common::auth::request_message("k", "get", "/p?q=1", 7, "n", b"");
        let fields: Vec<&str> = message.split('\n').collect();
        assert_eq!(fields[0], "REGISTRY-HMAC-SHA256");
        assert_eq!(fields[1..6], ["k", "GET", "/p?q=1", "7", "n"]);
        assert!(CONSOLE_JS.contains(
            "['REGISTRY-HMAC-SHA256', cred.keyId, method.toUpperCase(), target,\n      timestamp, nonce, bodyHash].join('\\n')"
        ));
        for header in [HDR_KEY, HDR_DATE, HDR_NONCE, HDR_SIGNATURE] {
            assert!(CONSOLE_JS.contains(&format!("'{header}'")), "{header}");
        }
    }
}
