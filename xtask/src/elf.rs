//! Checks that the packaged executable can start on the Functions Linux workers: an ELF 64-bit,
//! little-endian, x86-64 file with no program interpreter (`PT_INTERP`), that is, statically linked.
//!
//! A glibc build links against the worker image's libc and breaks when that image moves on; a
//! macOS or aarch64 build does not start at all. docs/microsoft-facts.md §7 asks for a static
//! `x86_64-unknown-linux-musl` build. Rust's musl target makes static-PIE executables (`ET_DYN`
//! without `PT_INTERP`), so the absence of an interpreter is what we test, not the file type.

/// Why a file is not a static x86-64 Linux executable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file (is it a Linux build?)")]
    NotElf,
    #[error("not a 64-bit little-endian ELF file")]
    WrongClass,
    #[error(
        "built for ELF machine {0:#x}, not x86-64 (0x3e): build with --target x86_64-unknown-linux-musl"
    )]
    WrongMachine(u16),
    #[error(
        "dynamically linked (has a program interpreter): build with --target x86_64-unknown-linux-musl for a static binary"
    )]
    Dynamic,
    #[error("truncated ELF header or program header table")]
    Truncated,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const CLASS_64: u8 = 2;
const LITTLE_ENDIAN: u8 = 1;
const MACHINE_X86_64: u16 = 0x3e;
const PT_INTERP: u32 = 3;

fn read_u16(bytes: &[u8], at: usize) -> Result<u16, ElfError> {
    let slice = bytes.get(at..at + 2).ok_or(ElfError::Truncated)?;
    Ok(u16::from_le_bytes([slice[0], slice[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, ElfError> {
    let slice = bytes.get(at..at + 4).ok_or(ElfError::Truncated)?;
    Ok(u32::from_le_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64, ElfError> {
    let slice = bytes.get(at..at + 8).ok_or(ElfError::Truncated)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(slice);
    Ok(u64::from_le_bytes(word))
}

/// Checks the ELF header and program headers of `bytes` (the whole file).
pub fn check_static_x86_64(bytes: &[u8]) -> Result<(), ElfError> {
    if bytes.get(..4) != Some(ELF_MAGIC.as_slice()) {
        return Err(ElfError::NotElf);
    }
    if bytes.get(4) != Some(&CLASS_64) || bytes.get(5) != Some(&LITTLE_ENDIAN) {
        return Err(ElfError::WrongClass);
    }
    let machine = read_u16(bytes, 18)?;
    if machine != MACHINE_X86_64 {
        return Err(ElfError::WrongMachine(machine));
    }
    let table_offset = usize::try_from(read_u64(bytes, 32)?).map_err(|_| ElfError::Truncated)?;
    let entry_size = usize::from(read_u16(bytes, 54)?);
    let entry_count = usize::from(read_u16(bytes, 56)?);
    for index in 0..entry_count {
        let entry = table_offset
            .checked_add(index.checked_mul(entry_size).ok_or(ElfError::Truncated)?)
            .ok_or(ElfError::Truncated)?;
        if read_u32(bytes, entry)? == PT_INTERP {
            return Err(ElfError::Dynamic);
        }
    }
    Ok(())
}

/// A minimal ELF64 x86-64 header followed by `program_types` program headers: enough for
/// [`check_static_x86_64`]. Used by tests to stand in for a real build.
pub fn synthetic_executable(program_types: &[u32]) -> Vec<u8> {
    const HEADER: usize = 64;
    const ENTRY: usize = 56;
    let mut bytes = vec![0u8; HEADER + ENTRY * program_types.len()];
    bytes[..4].copy_from_slice(ELF_MAGIC);
    bytes[4] = CLASS_64;
    bytes[5] = LITTLE_ENDIAN;
    bytes[6] = 1; // EI_VERSION
    bytes[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN, as static-pie musl builds are
    bytes[18..20].copy_from_slice(&MACHINE_X86_64.to_le_bytes());
    bytes[20..24].copy_from_slice(&1u32.to_le_bytes());
    bytes[32..40].copy_from_slice(&(HEADER as u64).to_le_bytes());
    bytes[52..54].copy_from_slice(&(HEADER as u16).to_le_bytes());
    bytes[54..56].copy_from_slice(&(ENTRY as u16).to_le_bytes());
    bytes[56..58].copy_from_slice(&(program_types.len() as u16).to_le_bytes());
    for (index, kind) in program_types.iter().enumerate() {
        let at = HEADER + index * ENTRY;
        bytes[at..at + 4].copy_from_slice(&kind.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const PT_LOAD: u32 = 1;

    #[test]
    fn static_executable_passes_and_an_interpreter_is_refused() {
        assert_eq!(
            check_static_x86_64(&synthetic_executable(&[PT_LOAD, PT_LOAD])),
            Ok(())
        );
        assert_eq!(
            check_static_x86_64(&synthetic_executable(&[PT_LOAD, PT_INTERP])),
            Err(ElfError::Dynamic)
        );
    }

    #[test]
    fn scripts_other_machines_and_truncated_files_are_refused() {
        assert_eq!(
            check_static_x86_64(b"#!/bin/sh\necho hi\n"),
            Err(ElfError::NotElf)
        );
        let mut arm = synthetic_executable(&[PT_LOAD]);
        arm[18..20].copy_from_slice(&0xb7u16.to_le_bytes()); // aarch64
        assert_eq!(check_static_x86_64(&arm), Err(ElfError::WrongMachine(0xb7)));
        let whole = synthetic_executable(&[PT_LOAD, PT_LOAD]);
        assert_eq!(check_static_x86_64(&whole[..80]), Err(ElfError::Truncated));
    }

    #[test]
    fn the_test_runner_itself_is_dynamic_on_a_gnu_host() {
        // The test binary is linked like any host build: against glibc when the host is *-linux-gnu.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        if cfg!(all(
            target_os = "linux",
            target_arch = "x86_64",
            target_env = "gnu"
        )) {
            assert_eq!(check_static_x86_64(&me), Err(ElfError::Dynamic));
        }
    }
}
