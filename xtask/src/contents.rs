//! What the shipped executable must not contain: the Microsoft 365 simulator (`crates/m365-sim`) that `galbridge
//! demo` and the tests run, with its HTTPS server, RSA key generation (`rsa`) and certificate generation (`rcgen`).
//! The package is built with [`PACKAGE_FEATURE_ARGS`] (no `demo` cargo feature), which leaves them out; a binary
//! built otherwise, or a re-added dependency, is refused before a byte of the package is written.
//!
//! The evidence is in the binary itself: even stripped, a Rust executable keeps the source paths of the code that
//! can panic (`Location` records for bounds checks, `unwrap`, arithmetic overflow), `crates/m365-sim/src/…` for the
//! simulator and `…/rcgen-0.14.5/src/…` for a crate from the registry.

/// The cargo arguments that choose the package's features: galbridge without its default `demo` feature.
pub const PACKAGE_FEATURE_ARGS: &[&str] = &["--no-default-features"];

/// Crates that must not be in the package's dependency graph (`cargo tree`) nor in its executable.
pub const FORBIDDEN_CRATES: &[&str] = &["m365-sim", "rcgen", "rsa"];

/// Byte strings that only the forbidden crates put into an executable, with what each reveals.
const MARKERS: &[(&str, &str)] = &[
    (
        "crates/m365-sim/src/",
        "the Microsoft 365 simulator (m365-sim)",
    ),
    ("m365_sim::", "the Microsoft 365 simulator (m365-sim)"),
    ("/rcgen-0.", "certificate generation (rcgen)"),
    ("/rsa-0.", "RSA key generation (rsa)"),
];

/// The executable carries code that belongs to the demo and the tests, not to Azure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "contains {what} (found {marker:?} at byte {offset}): the package is built without the `demo` feature \
     (`cargo build --release --no-default-features`), which leaves the simulator out"
)]
pub struct DemoCodeFound {
    pub what: &'static str,
    pub marker: &'static str,
    pub offset: usize,
}

/// Checks that `bytes` (the whole executable) holds none of the simulator's, `rcgen`'s or `rsa`'s code.
pub fn check_no_simulator(bytes: &[u8]) -> Result<(), DemoCodeFound> {
    for (marker, what) in MARKERS {
        if let Some(offset) = find(bytes, marker.as_bytes()) {
            return Err(DemoCodeFound {
                what,
                marker,
                offset,
            });
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_crate_by_its_source_paths_and_accepts_a_binary_without_them() {
        let clean = b"\x7fELF...src/engine/runner.rs\0/index.crates.io-1949cf8c6b5b557f/rustls-0.23.31/src/lib.rs\0";
        assert_eq!(check_no_simulator(clean), Ok(()));

        let simulator = [clean.as_slice(), b"crates/m365-sim/src/graph/users.rs\0"].concat();
        let found = check_no_simulator(&simulator).unwrap_err();
        assert_eq!(found.marker, "crates/m365-sim/src/");
        assert_eq!(found.offset, clean.len());
        assert!(found.to_string().contains("m365-sim"), "{found}");

        let rcgen =
            b"/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/rcgen-0.14.5/src/lib.rs";
        assert_eq!(check_no_simulator(rcgen).unwrap_err().marker, "/rcgen-0.");
        let rsa = b"/index.crates.io-1949cf8c6b5b557f/rsa-0.9.8/src/key.rs";
        assert_eq!(check_no_simulator(rsa).unwrap_err().marker, "/rsa-0.");
    }
}
