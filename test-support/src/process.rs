//! Owning handles for external programs.
//!
//! Tests start real daemons (registry, containerd). A daemon that outlives its test keeps ports,
//! sockets and disk busy and makes later tests fail in confusing ways, so every long-running child
//! is wrapped in a [`ChildGuard`] that kills and reaps it when dropped, including while a failing
//! test unwinds. Output goes to a log file rather than a pipe: a pipe nobody drains eventually
//! blocks the daemon, and a file survives for post-mortem reading.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::poll::{poll_until, Probe};

/// How much of a log is quoted in error messages: enough for the daemon's final complaint,
/// small enough to keep test output readable.
pub const LOG_TAIL_BYTES: u64 = 4096;

/// A spawned daemon that is killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout/stderr appended to `<log_dir>/<name>.log`.
    ///
    /// The log is opened in append mode so a daemon restarted under the same name keeps its
    /// earlier history, which is usually what explains a failure after a restart.
    pub fn spawn_logged(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening log file {}", log_path.display()))?;
        let err_log = log.try_clone().context("duplicating log file handle")?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(err_log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name}: {}", describe(&cmd)))?;
        tracing::debug!(name, pid = child.id(), log = %log_path.display(), "spawned");
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log_path,
        })
    }

    /// Name given at spawn time, used in messages and as the log file stem.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id while the child has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (a name such as `STOP` or `CONT`) to the child: a stopped process keeps its
    /// sockets open and answers nothing, as a swapping or partitioned server does.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} has exited", self.name))?;
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// File receiving the child's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last [`LOG_TAIL_BYTES`] of the log, for error messages.
    pub fn log_tail(&self) -> String {
        read_log_tail(&self.log_path, LOG_TAIL_BYTES)
    }

    /// Returns an error carrying the exit status and log tail if the child has exited.
    ///
    /// Readiness loops call this on every iteration so a daemon that dies on a bad config fails
    /// the test immediately with its own error message instead of after a long timeout.
    pub fn ensure_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} is not running: it was stopped", self.name);
        };
        match child
            .try_wait()
            .with_context(|| format!("polling {}", self.name))?
        {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited unexpectedly ({status}); log {}:\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail()
            ),
        }
    }

    /// Polls until the command `probe` makes (a client asking the daemon something trivial, made
    /// afresh each time) succeeds, failing at once if the daemon exits: how a daemon that answers
    /// only its own CLI on a socket (containerd, dockerd) is known to be up.
    pub async fn wait_answering(
        &mut self,
        what: &str,
        timeout: Duration,
        probe: impl Fn() -> tokio::process::Command,
    ) -> Result<()> {
        poll_until(what, timeout, || {
            let alive = self.ensure_running();
            let cmd = probe();
            async move {
                alive?;
                Ok(match run_command(cmd, Duration::from_secs(5)).await {
                    Ok(_) => Probe::Ready(()),
                    Err(err) => Probe::NotYet(format!("{err:#}")),
                })
            }
        })
        .await
    }

    /// Whether the child is still alive.
    pub fn is_running(&mut self) -> bool {
        self.ensure_running().is_ok()
    }

    /// Kills the child and waits for it, so its port and files are released on return.
    /// Idempotent.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            // Failure here means the process exited on its own in between; wait() reaps it.
            let _ = child.kill();
        }
        child.wait().with_context(|| format!("reaping {}", self.name))?;
        tracing::debug!(name = %self.name, "stopped");
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(err) = self.kill() {
            tracing::warn!(name = %self.name, "failed to stop child: {err:#}");
        }
    }
}

/// Reads at most `max_bytes` from the end of `path`, starting at a line boundary when possible.
/// Never fails: a missing or unreadable log yields a short explanation instead, because this is
/// only ever used to decorate another error.
/// CPU seconds (user plus system time) process `pid` has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
    // The fields after the parenthesised command name (which may hold spaces); utime and stime
    // are the line's 14th and 15th, the 12th and 13th after the name. Linux counts them in
    // clock ticks of 1/100 s (USER_HZ).
    let (_, rest) = stat.rsplit_once(')').context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = [11, 12]
        .iter()
        .map(|&i| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .context("unreadable /proc stat")
        })
        .sum::<Result<u64>>()?;
    Ok(ticks as f64 / 100.0)
}

pub fn read_log_tail(path: &Path, max_bytes: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(max_bytes);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
        file.read_to_end(&mut buf)?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        Ok(match (start > 0, text.find('\n')) {
            (true, Some(newline)) => text[newline + 1..].to_owned(),
            _ => text,
        })
    };
    read().unwrap_or_else(|err| format!("<log {} unreadable: {err}>", path.display()))
}

/// Captured output of a finished command.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Runs a short-lived client command (skopeo, ctr) to completion.
///
/// Fails if it exits non-zero or exceeds `timeout`; the error names the command (credentials
/// redacted) and quotes its stderr, which is where these tools explain themselves. On timeout the
/// child is killed rather than left running.
pub async fn run_command(mut cmd: tokio::process::Command, timeout: Duration) -> Result<CommandOutput> {
    let description = describe(cmd.as_std());
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("{description} did not finish within {timeout:?}"))?
        .with_context(|| format!("running {description}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        bail!(
            "{description} failed ({}):\n{}{}",
            output.status,
            stderr.trim_end(),
            tail_hint(&stdout)
        );
    }
    Ok(CommandOutput { stdout, stderr })
}

fn tail_hint(stdout: &str) -> String {
    let stdout = stdout.trim_end();
    if stdout.is_empty() {
        String::new()
    } else {
        let start = stdout.len().saturating_sub(2048);
        let start = (start..stdout.len())
            .find(|i| stdout.is_char_boundary(*i))
            .unwrap_or(0);
        format!("\nstdout:\n{}", &stdout[start..])
    }
}

/// Renders a command line for messages, replacing credential arguments with `***`.
pub fn describe(cmd: &Command) -> String {
    const SECRET_FLAGS: [&str; 5] = ["--dest-creds", "--src-creds", "--creds", "-u", "--user"];
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    let mut redact_next = false;
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if redact_next {
            parts.push("***".to_owned());
            redact_next = false;
            continue;
        }
        match SECRET_FLAGS
            .iter()
            .find(|flag| arg.starts_with(&format!("{flag}=")))
        {
            Some(flag) => parts.push(format!("{flag}=***")),
            None => {
                redact_next = SECRET_FLAGS.contains(&arg.as_ref());
                parts.push(arg.into_owned());
            }
        }
    }
    parts.join(" ")
}

/// Removes proxy settings from a client command's environment. All traffic in these tests is
/// loopback; a CI proxy must never see it, whatever the tool's own proxy exemptions are.
pub fn scrub_proxy_env(cmd: &mut tokio::process::Command) {
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
}

/// Whether `program` can be found on `PATH`, for tests that depend on optional tools.
pub fn program_on_path(program: impl AsRef<OsStr>) -> bool {
    let program = program.as_ref();
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Runs `program args` to completion; a failure carries its stderr.
pub fn run_checked(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `cmd` to completion and returns its standard output; panics with its standard error
/// if it fails. For tests of the command-line tools.
pub fn stdout_of(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap_or_else(|e| panic!("{}: {e}", describe(cmd)));
    assert!(
        output.status.success(),
        "{} failed: {}",
        describe(cmd),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes `contents` to `dir/name` readable by its owner only, as secrets must be.
pub fn private_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_redacts_credentials() {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--dest-creds",
            "alice:secret",
            "--src-creds=bob:pw",
            "a",
            "b",
        ]);
        let text = describe(&cmd);
        assert_eq!(text, "skopeo copy --dest-creds *** --src-creds=*** a b");
    }

    #[test]
    fn log_tail_starts_at_line_boundary() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x.log");
        std::fs::write(&path, "first line\nsecond line\nthird\n")?;
        assert_eq!(read_log_tail(&path, 16), "third\n");
        assert_eq!(read_log_tail(&path, 1000), "first line\nsecond line\nthird\n");
        assert!(read_log_tail(&dir.path().join("missing"), 10).contains("unreadable"));
        Ok(())
    }

    #[tokio::test]
    async fn guard_kills_on_drop_and_reports_early_exit() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut sleeper = Command::new("sleep");
        sleeper.arg("600");
        let mut guard = ChildGuard::spawn_logged("sleeper", sleeper, dir.path())?;
        assert!(guard.is_running());
        let pid = guard.pid().expect("pid while running");
        drop(guard);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "child must be reaped on drop"
        );

        let mut failing = Command::new("sh");
        failing.args(["-c", "echo boom >&2; exit 3"]);
        let mut guard = ChildGuard::spawn_logged("failing", failing, dir.path())?;
        let err = crate::poll::poll_until::<(), _, _>("exit", Duration::from_secs(5), || {
            let res = guard.ensure_running();
            async move { res.map(|()| crate::poll::Probe::NotYet("running".into())) }
        })
        .await
        .expect_err("must report the exit");
        assert!(format!("{err:#}").contains("boom"), "{err:#}");
        Ok(())
    }

    #[tokio::test]
    async fn run_command_reports_stderr() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "echo nope >&2; exit 1"]);
        let err = run_command(cmd, Duration::from_secs(5))
            .await
            .expect_err("must fail");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
