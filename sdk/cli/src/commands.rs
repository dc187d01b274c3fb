//! Owns what each verb does: it calls `nimbus-client`, prints results (JSON, pretty, to stdout;
//! progress and hints to stderr, so stdout stays machine-readable) and says which exit status to
//! end with.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use nimbus_client::http::Method;
use nimbus_client::{Client, Manifest, build_function};
use serde::Serialize;

use crate::{
    Cli, Command, DeployArgs, FunctionCommand, InvokeArgs, KeyCommand, ModelCommand, TenantCommand,
    config,
};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let (api_key, warning) = config::resolve_api_key(cli.api_key, &config::data_dir());
    if let Some(warning) = warning {
        let _ = writeln!(io::stderr(), "warning: {warning}");
    }
    let client = Client::new(&cli.url, api_key)?;
    match cli.command {
        Command::Deploy(args) => deploy(&client, args).await,
        Command::Invoke(args) => invoke(&client, args).await,
        Command::Model(ModelCommand::Push {
            name,
            file,
            engine,
            target,
        }) => {
            let version = client
                .push_model(&name, &file, engine.as_str(), target.as_str())
                .await?;
            print_json(&version)
        }
        Command::Model(ModelCommand::Register {
            name,
            uri,
            sha256,
            engine,
            target,
        }) => {
            let version = client
                .register_model(&name, &uri, &sha256, engine.as_str(), target.as_str())
                .await?;
            print_json(&version)
        }
        Command::Model(ModelCommand::List) => print_json(&client.list_models().await?),
        Command::Function(FunctionCommand::List) => print_json(&client.list_functions().await?),
        Command::Function(FunctionCommand::Versions { name }) => {
            print_json(&client.function_versions(&name).await?)
        }
        Command::Function(FunctionCommand::Alias {
            name,
            alias,
            version,
        }) => print_json(&client.set_alias(&name, &alias, &version).await?),
        Command::Function(FunctionCommand::Aliases { name }) => {
            print_json(&client.aliases(&name).await?)
        }
        Command::Function(FunctionCommand::Rollback { name, alias }) => {
            let moved = client.rollback(&name, Some(&alias)).await?;
            note(&format!(
                "{}@{} now points at {} (was {})",
                moved.name,
                moved.alias,
                moved.version,
                moved.previous.as_deref().unwrap_or("nothing")
            ));
            print_json(&moved)
        }
        Command::Function(FunctionCommand::Delete { name, version }) => {
            print_json(&client.delete_version(&name, &version).await?)
        }
        Command::Whoami => print_json(&client.whoami().await?),
        Command::Tenant(TenantCommand::Create { name }) => {
            let created = client.create_tenant(&name).await?;
            print_json(&created)?;
            note(&format!(
                "the admin key of tenant `{}` is shown only this once: store it now",
                created.tenant.name
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant(TenantCommand::List) => print_json(&client.list_tenants().await?),
        Command::Key(KeyCommand::Create {
            scopes,
            expires_in,
            tenant,
        }) => {
            let scopes: Vec<String> = scopes.iter().map(|s| s.as_str().to_string()).collect();
            let created = client
                .create_key(&scopes, expires_in, tenant.as_deref())
                .await?;
            print_json(&created)?;
            note("the key is shown only this once: store it now");
            Ok(ExitCode::SUCCESS)
        }
        Command::Key(KeyCommand::List { tenant }) => {
            print_json(&client.list_keys(tenant.as_deref()).await?)
        }
        Command::Key(KeyCommand::Revoke { id, tenant }) => {
            print_json(&client.revoke_key(&id, tenant.as_deref()).await?)
        }
    }
}

async fn deploy(client: &Client, args: DeployArgs) -> Result<ExitCode> {
    let (manifest, dir) = Manifest::load(&args.path)?;
    // Building blocks this (single-threaded) runtime on purpose: nothing else runs meanwhile.
    let wasm = match (&manifest.build, args.no_build) {
        (Some(cmd), false) => {
            note(&format!("building {}: {cmd}", manifest.name));
            build_function(&manifest, &dir)?
        }
        _ => {
            let unbuilt = Manifest {
                build: None,
                ..manifest.clone()
            };
            build_function(&unbuilt, &dir)?
        }
    };
    note(&format!(
        "deploying {} ({}) to {}",
        manifest.name,
        wasm.display(),
        client.base_url()
    ));
    let version = client.deploy(&manifest, &wasm).await?;
    print_json(&version)?;
    note(&format!("invoke with: nimbus invoke {}", version.name));
    Ok(ExitCode::SUCCESS)
}

async fn invoke(client: &Client, args: InvokeArgs) -> Result<ExitCode> {
    let body = match &args.data {
        Some(data) => read_data(data)?,
        None => Vec::new(),
    };
    let method = match &args.method {
        Some(m) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
            .with_context(|| format!("invalid HTTP method `{m}`"))?,
        None if args.data.is_some() => Method::POST,
        None => Method::GET,
    };
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>>>()?;
    let tenant = match args.tenant {
        Some(t) => t,
        None => {
            client
                .whoami()
                .await
                .context("cannot find your tenant from the API key (pass --tenant)")?
                .tenant
        }
    };
    let resp = client
        .invoke(&tenant, &args.function, &args.path, method, body, &headers)
        .await?;
    write_stdout(&resp.body)?;
    if resp.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        let reason = nimbus_client::http::StatusCode::from_u16(resp.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let ends_in_newline = resp.body.last().is_none_or(|b| *b == b'\n');
        let sep = if ends_in_newline { "" } else { "\n" };
        let _ = writeln!(io::stderr(), "{sep}HTTP {} {reason}", resp.status);
        Ok(ExitCode::FAILURE)
    }
}

/// `--data`: `@-` is stdin, `@FILE` a file, anything else the text itself.
fn read_data(data: &str) -> Result<Vec<u8>> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the request body from stdin")?;
            Ok(buf)
        }
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}")),
        None => Ok(data.as_bytes().to_vec()),
    }
}

/// `-H 'name: value'`.
fn parse_header(h: &str) -> Result<(String, String)> {
    match h.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => bail!("invalid header `{h}`: expected 'NAME: VALUE'"),
    }
}

fn print_json<T: Serialize>(value: &T) -> Result<ExitCode> {
    let mut text = serde_json::to_string_pretty(value).context("cannot render JSON")?;
    text.push('\n');
    write_stdout(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a closed pipe (`nimbus ... | head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// A progress line or hint on stderr.
fn note(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_data() {
        assert_eq!(
            parse_header("Content-Type: image/jpeg").unwrap(),
            ("Content-Type".to_string(), "image/jpeg".to_string())
        );
        assert_eq!(
            parse_header("x-url:http://a:1").unwrap(),
            ("x-url".to_string(), "http://a:1".to_string())
        );
        assert!(parse_header("novalue").is_err());
        assert!(parse_header(": v").is_err());

        assert_eq!(read_data("hello").unwrap(), b"hello");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("body.bin");
        std::fs::write(&f, [0u8, 1, 2]).unwrap();
        assert_eq!(
            read_data(&format!("@{}", f.display())).unwrap(),
            vec![0, 1, 2]
        );
        let err = read_data("@/nonexistent/x").unwrap_err();
        assert!(format!("{err:#}").starts_with("cannot read /nonexistent/x"));
    }
}
