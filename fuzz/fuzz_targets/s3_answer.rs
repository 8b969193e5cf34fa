//! Fuzz what the signed S3 client reads out of a destination server's answers (list pages,
//! upload ids, ETags, errors inside 200 bodies): never a panic, and an error is only ever
//! found in a body whose root element is named `Error` (perhaps with a namespace prefix or
//! attributes, so `<Error` or `:Error` is in the text).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (key, xml) = text.split_once('\n').unwrap_or(("k", text));
    let (_, _, _, status) = s3repl_io::dest::read_answer(xml, key);
    if let Some(code) = status {
        assert!(xml.contains("<Error") || xml.contains(":Error"));
        assert!(matches!(code, 400 | 500 | 503));
    }
});
