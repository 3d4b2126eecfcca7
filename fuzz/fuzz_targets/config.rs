//! Configuration files (`src/config/file.rs`): arbitrary text as the TOML file. Invariant:
//! loaded or refused with an error, never a panic; what loads prints (`check-config`) and,
//! without secrets to mask, the printed text loads back to the same settings.
#![no_main]

use std::{io::Write as _, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use mcp_relay::config::file::{FileConfig, MASK, Sources, load};

fn dir() -> &'static tempfile::TempDir {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().expect("a temp dir"))
}

fn load_text(text: &str) -> Option<FileConfig> {
    let path = dir().path().join("relay.toml");
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    drop(f);
    load(&Sources {
        file: Some(path),
        ..Sources::default()
    })
    .ok()
    .map(|(file, _)| file)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(file) = load_text(text) else {
        return;
    };
    let printed = file.to_masked_toml();
    if !printed.contains(MASK) {
        let again = load_text(&printed).expect("the printed configuration loads");
        assert_eq!(again, file);
    }
});
