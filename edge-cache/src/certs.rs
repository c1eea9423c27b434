//! `edge-cache certs`: a cluster CA and the certificates it signs, in one command each.
//!
//! ```text
//! edge-cache certs init --dir /etc/damselfly/ca
//! edge-cache certs issue --ca /etc/damselfly/ca --name edge-eu-1 --dns edge.eu.internal --out /etc/damselfly/tls
//! edge-cache certs issue --ca /etc/damselfly/ca --name node-17 --ip 10.0.3.17 --out node-17/
//! ```
//!
//! An agent's certificate names it (CN = its identity in the scheduler) and the addresses other
//! agents reach it at (`--ip`/`--dns`: the host of its `advertise_url`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use damselfly_server::certs::{self, Subject};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a cluster CA: DIR/ca.crt (share it) and DIR/ca.key (mode 0600, keep it safe).
    Init(InitArgs),
    /// Issue a certificate signed by the cluster CA: OUT/NAME.crt and OUT/NAME.key (mode 0600).
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for ca.crt and ca.key (created; an existing CA is never overwritten).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The CA's common name.
    #[arg(long, default_value = "Damselfly cluster CA")]
    pub name: String,
    /// Days of validity.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Directory holding the CA (ca.crt, ca.key).
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// The identity (certificate CN): an edge's name, an agent's host id.
    #[arg(long)]
    pub name: String,
    /// A DNS name the holder is reached at (repeatable).
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// An IP address the holder is reached at (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
    /// A spiffe:// URI: the identity instead of the CN.
    #[arg(long, value_name = "URI")]
    pub spiffe: Option<String>,
    /// Days of validity.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Directory for NAME.crt and NAME.key.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(command: &CertsCommand) -> Result<(), String> {
    match command {
        CertsCommand::Init(a) => {
            let cert = certs::init_ca(&a.dir, &a.name, a.days)?;
            println!("{}", cert.display());
        }
        CertsCommand::Issue(a) => {
            let subject = Subject {
                name: a.name.clone(),
                dns: a.dns.clone(),
                ips: a.ip.clone(),
                spiffe: a.spiffe.clone(),
                days: a.days,
            };
            let (cert, key) = certs::issue(&a.ca, &subject, &a.out)?;
            println!("{}\n{}", cert.display(), key.display());
        }
    }
    Ok(())
}
