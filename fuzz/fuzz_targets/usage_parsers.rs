//! The token-usage readers of proxied answers, on arbitrary bytes split at data-derived positions:
//! every format's JSON answer and event stream, the usage-chunk stripping, the request-body rules.
//! Nothing the upstream sends may panic the proxy; `fuzz_one` also checks that stripping never loses or
//! reorders a byte it did not strip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sidekey_http::proxy::usage::fuzz_one(data));
