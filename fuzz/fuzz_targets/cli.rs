//! The command line and address grammar: any argument vector parses or fails cleanly.
#![no_main]

use std::ffi::OsString;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Arguments are separated by NUL bytes; the first one also exercises the address parser.
    let args: Vec<OsString> = text.split('\0').map(OsString::from).collect();
    if let Some(first) = args.first().and_then(|a| a.to_str()) {
        let _ = ghostunnel::net::Addr::parse(first);
        let _ = ghostunnel::net::Addr::is_safe(first);
        let _ = ghostunnel::duration::parse_go_duration(first);
        let _ = ghostunnel::tunnel::ProxyUrl::parse(first);
    }
    // `@file` arguments would read the file system: leave them out.
    if args.iter().any(|a| a.to_string_lossy().starts_with('@')) {
        return;
    }
    if let Ok(ghostunnel::cli::Parsed::Run(raw)) = ghostunnel::cli::parse(args, &|_| None) {
        let _ = raw.into_config();
    }
});
