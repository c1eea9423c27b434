//! `peer-agent configure|unconfigure containerd|docker|podman|crio`: points a runtime at this
//! agent, or takes it away again.
//!
//! Each writer edits the runtime's own files in place, idempotently: running it twice changes
//! nothing, and everything the user had (other hosts, other keys, comments in TOML) stays.
//! `unconfigure` removes only what `configure` added.

mod containerd;
mod containers;
mod docker;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

pub use containerd::{containerd_hosts, default_hosts, enable_config_path, remove_host};
pub use containers::{podman_registries, remove_podman_mirror};
pub use docker::{docker_daemon, remove_docker_mirror};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    Containerd,
    Docker,
    Podman,
    /// CRI-O: a drop-in under `/etc/containers/registries.conf.d/`.
    Crio,
}

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// Which runtime to configure.
    pub runtime: Runtime,
    /// This agent's mirror URL (default: http://127.0.0.1:5090).
    #[arg(long, default_value = "http://127.0.0.1:5090")]
    pub mirror: String,
    /// Registry to mirror (containerd, podman, crio), e.g. `docker.io` or `registry.example.com:5000`.
    #[arg(long, default_value = "docker.io")]
    pub registry: String,
    /// containerd: where the registry itself is reached when the agent is not (hosts.toml's
    /// `server`; default `https://<registry>`, Docker Hub's address for docker.io).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// containerd: also send every other registry through the agent (`certs.d/_default`); the
    /// agent must know each one's origin (its `[[registries]]`) to fall back to it.
    #[arg(long)]
    pub all_registries: bool,
    /// containerd: its config file; `config_path` is set there when missing, so containerd
    /// reads `certs.d` at all (restart containerd afterwards).
    #[arg(long, value_name = "FILE", default_value = "/etc/containerd/config.toml")]
    pub config_toml: PathBuf,
    /// File or directory to edit (default: the runtime's standard location; for containerd
    /// the `config_path` in its config file, else /etc/containerd/certs.d).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Print the result instead of writing it.
    #[arg(long)]
    pub dry_run: bool,
}

/// One file's new content.
struct Edit {
    path: PathBuf,
    old: String,
    /// `None`: delete the file.
    new: Option<String>,
}

pub fn run(args: &ConfigureArgs) -> Result<()> {
    apply(args, plan_configure(args)?)?;
    match args.runtime {
        Runtime::Docker => println!("reload docker to apply: kill -HUP $(pidof dockerd)"),
        Runtime::Crio => println!("reload CRI-O to apply: systemctl reload crio"),
        _ => {}
    }
    Ok(())
}

pub fn run_unconfigure(args: &ConfigureArgs) -> Result<()> {
    apply(args, plan_unconfigure(args)?)
}

/// `http://127.0.0.1:5090` → (`http://127.0.0.1:5090`, `127.0.0.1:5090`, insecure).
fn mirror_parts(args: &ConfigureArgs) -> Result<(String, String, bool)> {
    let mirror = reqwest::Url::parse(&args.mirror).context("--mirror must be a URL")?;
    let host = match (mirror.host_str(), mirror.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => bail!("--mirror has no host"),
    };
    Ok((
        args.mirror.trim_end_matches('/').to_string(),
        host,
        mirror.scheme() == "http",
    ))
}

fn plan_configure(args: &ConfigureArgs) -> Result<Vec<Edit>> {
    let (mirror_url, host, insecure) = mirror_parts(args)?;
    let mut edits = Vec::new();
    match args.runtime {
        Runtime::Containerd => {
            let config = read(&args.config_toml)?;
            let (config_new, certs_dir) = enable_config_path(&config, args.path.as_deref())?;
            edits.push(Edit {
                path: args.config_toml.clone(),
                old: config,
                new: Some(config_new),
            });
            let path = certs_dir.join(&args.registry).join("hosts.toml");
            let old = read(&path)?;
            let new = containerd_hosts(&old, &args.registry, args.server.as_deref(), &mirror_url)?;
            edits.push(Edit {
                path,
                old,
                new: Some(new),
            });
            if args.all_registries {
                let path = certs_dir.join("_default").join("hosts.toml");
                let old = read(&path)?;
                let new = default_hosts(&old, &mirror_url)?;
                edits.push(Edit {
                    path,
                    old,
                    new: Some(new),
                });
            }
        }
        Runtime::Docker => {
            let path = args
                .path
                .clone()
                .unwrap_or_else(|| "/etc/docker/daemon.json".into());
            let old = read(&path)?;
            let new = docker_daemon(&old, &mirror_url, insecure.then_some(host.as_str()))?;
            edits.push(Edit {
                path,
                old,
                new: Some(new),
            });
        }
        Runtime::Podman | Runtime::Crio => {
            let path = containers_path(args);
            let old = read(&path)?;
            let new = podman_registries(&old, &args.registry, &host, insecure)?;
            edits.push(Edit {
                path,
                old,
                new: Some(new),
            });
        }
    }
    if args.all_registries && args.runtime != Runtime::Containerd {
        bail!("--all-registries is for containerd (certs.d/_default); the others name registries one by one");
    }
    Ok(edits)
}

fn plan_unconfigure(args: &ConfigureArgs) -> Result<Vec<Edit>> {
    let (mirror_url, host, insecure) = mirror_parts(args)?;
    let mut edits = Vec::new();
    let mut edit = |path: PathBuf, change: &dyn Fn(&str) -> Result<Option<String>>| -> Result<()> {
        let old = read(&path)?;
        if !old.is_empty() {
            let new = change(&old)?;
            edits.push(Edit { path, old, new });
        }
        Ok(())
    };
    match args.runtime {
        Runtime::Containerd => {
            let config = read(&args.config_toml)?;
            // config_path stays: it does no harm and the user may rely on it by now.
            let (_, certs_dir) = enable_config_path(&config, args.path.as_deref())?;
            edit(certs_dir.join(&args.registry).join("hosts.toml"), &|old| {
                remove_host(old, &mirror_url)
            })?;
            edit(certs_dir.join("_default").join("hosts.toml"), &|old| {
                remove_host(old, &mirror_url)
            })?;
        }
        Runtime::Docker => {
            let path = args
                .path
                .clone()
                .unwrap_or_else(|| "/etc/docker/daemon.json".into());
            edit(path, &|old| {
                remove_docker_mirror(old, &mirror_url, insecure.then_some(host.as_str())).map(Some)
            })?;
        }
        Runtime::Podman => edit(containers_path(args), &|old| {
            remove_podman_mirror(old, &args.registry, &host).map(Some)
        })?,
        Runtime::Crio => {
            // The drop-in is ours alone.
            let path = containers_path(args);
            let old = read(&path)?;
            if !old.is_empty() {
                edits.push(Edit { path, old, new: None });
            }
        }
    }
    Ok(edits)
}

fn containers_path(args: &ConfigureArgs) -> PathBuf {
    args.path.clone().unwrap_or_else(|| match args.runtime {
        Runtime::Crio => "/etc/containers/registries.conf.d/50-damselfly.conf".into(),
        _ => "/etc/containers/registries.conf".into(),
    })
}

fn apply(args: &ConfigureArgs, edits: Vec<Edit>) -> Result<()> {
    for edit in edits {
        if args.dry_run {
            println!("# {}", edit.path.display());
            print!("{}", edit.new.as_deref().unwrap_or("# (removed)\n"));
            continue;
        }
        match &edit.new {
            Some(new) if *new == edit.old => println!("{} unchanged", edit.path.display()),
            Some(new) => {
                write(&edit.path, new)?;
                println!("updated {}", edit.path.display());
            }
            None => {
                std::fs::remove_file(&edit.path)
                    .with_context(|| format!("removing {}", edit.path.display()))?;
                println!("removed {}", edit.path.display());
            }
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Written next to the file and renamed over it: a runtime never reads half a file.
fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("damselfly.tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}
