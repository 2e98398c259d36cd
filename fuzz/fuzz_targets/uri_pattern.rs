//! URI wildcard patterns: compiling and matching never panic, and `**` matches everything.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, input) = text.split_once('\0').unwrap_or((&text, ""));
    if let Ok(p) = ghostunnel::auth::UriPattern::compile(pattern) {
        let _ = p.matches(input);
    }
    let all = ghostunnel::auth::UriPattern::compile("**").expect("** compiles");
    assert!(all.matches(input));
});
