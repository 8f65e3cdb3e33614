//! Credentials: principals and their keys (`acl`), fresh secrets (`gen-secret`), a private
//! CA and server certificates (`tls`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use registry_common::acl::{Acl, Permissions};
use registry_common::auth::Credential;
use serde_json::{json, Value};

use super::show;
use super::target::Ctx;

#[derive(Subcommand)]
pub enum AclCommand {
    /// Every principal with its permissions and key ids (never secrets).
    List,
    /// Create a principal or replace its permissions.
    Put {
        name: String,
        /// Pattern of dataIds it may publish (`*` and `?` globs, e.g. `com.acme.*`); repeatable.
        #[arg(long = "publish")]
        publish: Vec<String>,
        /// Pattern of dataIds it may subscribe to; repeatable.
        #[arg(long = "subscribe")]
        subscribe: Vec<String>,
        /// Grant the admin API.
        #[arg(long)]
        admin: bool,
    },
    /// Remove a principal; its keys stop working and their connections are closed.
    Delete { name: String },
    /// Access keys of a principal.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key (at most two per principal) and print `KEY_ID:SECRET`, shown this once.
    Create {
        principal: String,
        /// Write `KEY_ID:SECRET` to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke a key: its connections are closed and it is refused from then on.
    Revoke { key_id: String },
}

#[derive(Subcommand)]
pub enum TlsCommand {
    /// Create a CA: writes `ca.pem` (give it to every server and client as `--tls-ca`) and
    /// `ca-key.pem` (keep it offline; mode 0600).
    Ca {
        /// Directory to write into.
        #[arg(long = "out-dir")]
        out_dir: PathBuf,
        /// Common name of the CA.
        #[arg(long, default_value = "registry cluster CA")]
        name: String,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Sign a certificate for a server: writes `<prefix>.pem` and `<prefix>-key.pem` (0600)
    /// for its `--tls-cert` and `--tls-key`.
    Cert {
        /// Directory holding `ca.pem` and `ca-key.pem`.
        #[arg(long = "ca-dir")]
        ca_dir: PathBuf,
        /// DNS name or IP address the server is reached at; repeatable, at least one.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Directory to write into.
        #[arg(long = "out-dir")]
        out_dir: PathBuf,
        /// File name prefix.
        #[arg(long, default_value = "server")]
        prefix: String,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

pub async fn acl(ctx: &Ctx, command: AclCommand) -> anyhow::Result<()> {
    let admin = ctx.admin();
    match command {
        AclCommand::List => {
            let acl: Acl = admin.get("/admin/v1/acl").await?;
            if ctx.globals.json {
                return show::json(&acl);
            }
            println!("revision {}", acl.revision);
            let mut t = show::table(["principal", "admin", "publish", "subscribe", "keys"]);
            for (name, p) in &acl.principals {
                let keys: Vec<&str> = p.keys.iter().map(|k| k.id.as_str()).collect();
                t.add_row([
                    name.clone(),
                    show::yes(p.permissions.admin).to_string(),
                    p.permissions.publish.join(" "),
                    p.permissions.subscribe.join(" "),
                    keys.join(" "),
                ]);
            }
            println!("{t}");
            Ok(())
        }
        AclCommand::Put {
            name,
            publish,
            subscribe,
            admin: is_admin,
        } => {
            let mut body = serde_json::to_value(Permissions {
                publish,
                subscribe,
                admin: is_admin,
            })?;
            body["name"] = json!(name);
            let out: Value = admin.post("/admin/v1/acl/put", &body).await?;
            changed(ctx, format!("principal {name} set"), &out)
        }
        AclCommand::Delete { name } => {
            let out: Value = admin
                .post("/admin/v1/acl/delete", &json!({ "name": name }))
                .await?;
            changed(ctx, format!("principal {name} deleted"), &out)
        }
        AclCommand::Key {
            command: KeyCommand::Create { principal, out },
        } => {
            let created: Value = admin
                .post(
                    "/admin/v1/acl/key-create",
                    &json!({ "principal": principal }),
                )
                .await?;
            let key_id = created["keyId"]
                .as_str()
                .context("no keyId in the answer")?;
            let secret = created["secret"]
                .as_str()
                .context("no secret in the answer")?;
            let line = format!("{key_id}:{secret}");
            match out {
                Some(path) => {
                    write_private(&path, &format!("{line}\n"))?;
                    eprintln!("key {key_id} of {principal} written to {}", path.display());
                }
                None => println!("{line}"),
            }
            Ok(())
        }
        AclCommand::Key {
            command: KeyCommand::Revoke { key_id },
        } => {
            let out: Value = admin
                .post("/admin/v1/acl/key-revoke", &json!({ "keyId": key_id }))
                .await?;
            changed(ctx, format!("key {key_id} revoked"), &out)
        }
    }
}

fn changed(ctx: &Ctx, what: String, answer: &Value) -> anyhow::Result<()> {
    if ctx.globals.json {
        return show::json(answer);
    }
    println!("{what} (ACL revision {})", answer["revision"]);
    Ok(())
}

/// `registryctl gen-secret`.
pub fn gen_secret(key_id: Option<String>, out: Option<PathBuf>) -> anyhow::Result<()> {
    let secret = registry_common::auth::Secret::generate();
    let line = match key_id {
        Some(id) => Credential::new(id.clone(), &secret)
            .map(|_| format!("{id}:{secret}"))
            .context("invalid key id")?,
        None => secret,
    };
    match out {
        Some(path) => write_private(&path, &format!("{line}\n")),
        None => {
            println!("{line}");
            Ok(())
        }
    }
}

/// `registryctl tls ca|cert`.
pub fn tls(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::Ca {
            out_dir,
            name,
            days,
        } => {
            let ca = crate::certs::new_ca(&name, days)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            std::fs::write(out_dir.join("ca.pem"), &ca.cert_pem)?;
            write_private(&out_dir.join("ca-key.pem"), &ca.key_pem)?;
            eprintln!("CA written to {} (ca.pem, ca-key.pem)", out_dir.display());
        }
        TlsCommand::Cert {
            ca_dir,
            names,
            out_dir,
            prefix,
            days,
        } => {
            let read = |name: &str| {
                let path = ca_dir.join(name);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))
            };
            let ca = crate::certs::CertPair {
                cert_pem: read("ca.pem")?,
                key_pem: read("ca-key.pem")?,
            };
            let cert = crate::certs::issue(&ca, &names, days)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            std::fs::write(out_dir.join(format!("{prefix}.pem")), &cert.cert_pem)?;
            write_private(&out_dir.join(format!("{prefix}-key.pem")), &cert.key_pem)?;
            eprintln!(
                "certificate for {} written to {} ({prefix}.pem, {prefix}-key.pem)",
                names.join(", "),
                out_dir.display()
            );
        }
    }
    Ok(())
}

/// Writes a secret file readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
