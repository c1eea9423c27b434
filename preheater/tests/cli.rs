//! `preheater --check-config`: the effective configuration, or a clear error and a non-zero exit.

use std::process::Command;

fn check(args: &[&str], file: Option<&str>) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_preheater"));
    // A lab preheater: these checks are about the configuration, not the transport.
    cmd.arg("--check-config").arg("--insecure").args(args);
    if let Some(text) = file {
        let path = dir.path().join("preheater.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    // Only this process's own variables: none of DAMSELFLY_PREHEATER_* leak in.
    cmd.env_clear();
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_configuration_or_fails_clearly() {
    let (ok, stdout, _) = check(
        &[
            "--edge",
            "eu=http://edge-eu:5080",
            "--registry",
            "registry.example.com=https://registry.example.com",
        ],
        Some("webhook_token = \"t\"\n[warm]\nmax_attempts = 3\n"),
    );
    assert!(ok);
    assert!(
        stdout.contains("region = \"eu\"") && stdout.contains("max_attempts = 3"),
        "{stdout}"
    );

    assert!(
        stdout.contains("webhook_token = \"<redacted>\""),
        "secrets are not printed: {stdout}"
    );

    let (ok, _, stderr) = check(&[], Some("webhook_tokn = \"t\"\n"));
    assert!(!ok);
    assert!(stderr.contains("webhook_tokn"), "{stderr}");
    let (ok, _, stderr) = check(&["--edge", "eu"], None);
    assert!(!ok);
    assert!(
        stderr.contains("REGION=URL") || stderr.contains("KEY=VALUE"),
        "{stderr}"
    );
    let (ok, _, stderr) = check(&["--redis", "http://127.0.0.1:6379"], None);
    assert!(!ok && stderr.contains("redis"), "{stderr}");
}
