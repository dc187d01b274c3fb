//! `nimbus`, the command-line tool for a Nimbus server (nimbusd), built on `nimbus-client`.
//!
//! This module owns the command line: the clap definitions (their doc comments are the `--help`
//! text), the runtime, and the exit status (`error: <message>` on stderr and status 1 on any
//! failure). The verbs live in `commands`; where the URL and key come from lives in `config`.
//! New verbs are a variant in [`Command`] (or a nested subcommand enum) plus a function in
//! `commands`.

mod commands;
mod config;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Deploy functions, push models and invoke them on a Nimbus server (nimbusd).
#[derive(Debug, Parser)]
#[command(name = "nimbus", version)]
pub struct Cli {
    /// Base URL of nimbusd.
    #[arg(
        long,
        global = true,
        env = "NIMBUS_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,

    /// API key (nmb_<id>_<secret>). When neither this nor NIMBUS_API_KEY is given,
    /// <NIMBUS_DATA_DIR or ./.nimbus>/admin.key is used if it exists.
    #[arg(long, global = true, env = "NIMBUS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a function, upload its wasm and register a new version.
    Deploy(DeployArgs),
    /// Call a function; its response body goes to stdout.
    Invoke(InvokeArgs),
    /// Push and list models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// List functions and their versions.
    #[command(subcommand, name = "fn")]
    Function(FunctionCommand),
    /// Show the tenant, key id and scopes of the API key in use.
    Whoami,
    /// Create and list tenants (an admin key of tenant `default`).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Create, list and revoke API keys (an admin key).
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its first admin key (printed once: store it now).
    Create {
        /// Tenant name ([a-z0-9][a-z0-9._-]{0,62}).
        name: String,
    },
    /// List all tenants.
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key (printed once: store it now).
    Create {
        /// What the key may do: admin, deploy or invoke; repeat for more [default: invoke].
        #[arg(long = "scope", value_enum)]
        scopes: Vec<KeyScope>,
        /// Seconds until the key expires [default: never].
        #[arg(long = "expires-in", value_name = "SECONDS")]
        expires_in: Option<u64>,
        /// Tenant of the key [default: the API key's tenant; another needs an admin key of
        /// tenant `default`].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List API keys (never their secrets), newest first.
    List {
        /// Tenant whose keys to list [default: the API key's tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke an API key by its id.
    Revoke {
        /// The key id (the part between `nmb_` and the second `_`).
        id: String,
        /// Tenant of the key [default: the API key's tenant].
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyScope {
    Admin,
    Deploy,
    Invoke,
}

impl KeyScope {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Admin => "admin",
            KeyScope::Deploy => "deploy",
            KeyScope::Invoke => "invoke",
        }
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The function's directory, or its nimbus.toml.
    #[arg(default_value = ".")]
    pub path: PathBuf,

    /// Do not run the manifest's `build` command; upload the wasm as it is.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function: NAME, NAME@VERSION or NAME@ALIAS.
    pub function: String,

    /// Tenant that owns the function [default: the API key's tenant].
    #[arg(long)]
    pub tenant: Option<String>,

    /// Path (and ?query) the function sees.
    #[arg(long, default_value = "/")]
    pub path: String,

    /// HTTP method [default: POST with --data, GET without].
    #[arg(long, short = 'X')]
    pub method: Option<String>,

    /// Request body: literal text, @FILE to send a file, or @- to read stdin.
    #[arg(long, short = 'd')]
    pub data: Option<String>,

    /// Request header as 'NAME: VALUE'; repeat for more.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Upload a model file (skipped when the server has it) and register it as a version of NAME.
    Push {
        /// Model name, as function manifests refer to it.
        name: String,
        /// The model file (.onnx, or OpenVINO IR .xml).
        file: PathBuf,
        /// Engine that runs the model.
        #[arg(long, value_enum, default_value_t = Engine::Onnxruntime)]
        engine: Engine,
        /// Where the engine runs it.
        #[arg(long, value_enum, default_value_t = Target::Cpu)]
        target: Target,
    },
    /// Register an object already in S3 (uploaded with any S3 tool) as a version of NAME; nodes
    /// pull it on first use and check it against --sha256.
    Register {
        /// Model name, as function manifests refer to it.
        name: String,
        /// Where the object is: s3://BUCKET/KEY.
        uri: String,
        /// The sha256 of the object's bytes (64 hex characters), e.g. from `sha256sum`.
        #[arg(long)]
        sha256: String,
        /// Engine that runs the model.
        #[arg(long, value_enum, default_value_t = Engine::Onnxruntime)]
        engine: Engine,
        /// Where the engine runs it.
        #[arg(long, value_enum, default_value_t = Target::Cpu)]
        target: Target,
    },
    /// List the tenant's model versions, newest first.
    List,
}

#[derive(Debug, Subcommand)]
pub enum FunctionCommand {
    /// List the tenant's functions with their latest versions.
    List,
    /// List a function's versions, newest first.
    Versions {
        /// Function name.
        name: String,
    },
    /// Point an alias of a function at a version (`latest` or any name, e.g. `prod`).
    Alias {
        /// Function name.
        name: String,
        /// Alias name.
        alias: String,
        /// Version (12 hex characters) the alias should point at.
        version: String,
    },
    /// List a function's aliases and the versions they point at.
    Aliases {
        /// Function name.
        name: String,
    },
    /// Move an alias back to the version it pointed at before its last move.
    Rollback {
        /// Function name.
        name: String,
        /// The alias to roll back.
        #[arg(long, default_value = "latest")]
        alias: String,
    },
    /// Delete a version no alias points at (and the blobs nothing uses any more).
    Delete {
        /// Function name.
        name: String,
        /// Version (12 hex characters).
        version: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    Onnxruntime,
    Openvino,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Cpu,
    Gpu,
    Auto,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Onnxruntime => "onnxruntime",
            Engine::Openvino => "openvino",
        }
    }
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            Target::Gpu => "gpu",
            Target::Auto => "auto",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {e:#}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::Path;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_alias_rollback_and_delete() {
        let cli = Cli::try_parse_from(["nimbus", "fn", "alias", "hello", "prod", "0123456789ab"])
            .unwrap();
        match cli.command {
            Command::Function(FunctionCommand::Alias {
                name,
                alias,
                version,
            }) => assert_eq!(
                (name.as_str(), alias.as_str(), version.as_str()),
                ("hello", "prod", "0123456789ab")
            ),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["nimbus", "fn", "rollback", "hello"]).unwrap();
        match cli.command {
            Command::Function(FunctionCommand::Rollback { alias, .. }) => {
                assert_eq!(alias, "latest")
            }
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["nimbus", "fn", "rollback", "hello", "--alias", "prod"]).unwrap();
        match cli.command {
            Command::Function(FunctionCommand::Rollback { alias, .. }) => assert_eq!(alias, "prod"),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["nimbus", "fn", "delete", "hello", "0123456789ab"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Function(FunctionCommand::Delete { .. })
        ));
        assert!(Cli::try_parse_from(["nimbus", "fn", "delete", "hello"]).is_err());
    }

    #[test]
    fn parses_the_documented_verbs() {
        let cli = Cli::try_parse_from([
            "nimbus",
            "invoke",
            "classify@abc123",
            "--tenant",
            "t1",
            "--path",
            "/x",
            "--method",
            "PUT",
            "--data",
            "@img.jpg",
            "-H",
            "content-type: image/jpeg",
            "-H",
            "x-a: b",
            "--url",
            "http://h:1",
        ])
        .unwrap();
        assert_eq!(cli.url, "http://h:1");
        let Command::Invoke(a) = cli.command else {
            panic!("not invoke")
        };
        assert_eq!(a.function, "classify@abc123");
        assert_eq!(a.tenant.as_deref(), Some("t1"));
        assert_eq!(a.headers.len(), 2);

        let cli = Cli::try_parse_from(["nimbus", "model", "push", "m", "m.onnx"]).unwrap();
        match cli.command {
            Command::Model(ModelCommand::Push { engine, target, .. }) => {
                assert_eq!((engine, target), (Engine::Onnxruntime, Target::Cpu))
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "nimbus", "model", "push", "m", "m.xml", "--engine", "openvino", "--target", "auto",
        ])
        .unwrap();
        match cli.command {
            Command::Model(ModelCommand::Push { engine, target, .. }) => {
                assert_eq!((engine.as_str(), target.as_str()), ("openvino", "auto"))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["nimbus", "model", "push", "m", "f", "--engine", "tf"]).is_err()
        );
        let cli = Cli::try_parse_from([
            "nimbus",
            "model",
            "register",
            "m",
            "s3://b/k.onnx",
            "--sha256",
            "ab",
            "--engine",
            "openvino",
        ])
        .unwrap();
        match cli.command {
            Command::Model(ModelCommand::Register {
                uri,
                sha256,
                engine,
                ..
            }) => assert_eq!(
                (uri.as_str(), sha256.as_str(), engine),
                ("s3://b/k.onnx", "ab", Engine::Openvino)
            ),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["nimbus", "model", "register", "m", "s3://b/k"]).is_err());

        let cli = Cli::try_parse_from(["nimbus", "fn", "versions", "hello"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Function(FunctionCommand::Versions { .. })
        ));
        let cli = Cli::try_parse_from(["nimbus", "deploy", "--no-build"]).unwrap();
        match cli.command {
            Command::Deploy(d) => assert!(d.no_build && d.path == Path::new(".")),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["nimbus", "whoami"]).is_ok());

        let cli = Cli::try_parse_from([
            "nimbus",
            "key",
            "create",
            "--scope",
            "invoke",
            "--scope",
            "deploy",
            "--expires-in",
            "3600",
            "--tenant",
            "acme",
        ])
        .unwrap();
        match cli.command {
            Command::Key(KeyCommand::Create {
                scopes,
                expires_in,
                tenant,
            }) => {
                assert_eq!(scopes, vec![KeyScope::Invoke, KeyScope::Deploy]);
                assert_eq!(expires_in, Some(3600));
                assert_eq!(tenant.as_deref(), Some("acme"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["nimbus", "key", "create", "--scope", "root"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["nimbus", "key", "revoke", "abc123"])
                .unwrap()
                .command,
            Command::Key(KeyCommand::Revoke { .. })
        ));
        assert!(matches!(
            Cli::try_parse_from(["nimbus", "tenant", "create", "acme"])
                .unwrap()
                .command,
            Command::Tenant(TenantCommand::Create { .. })
        ));
        assert!(Cli::try_parse_from(["nimbus", "tenant", "list"]).is_ok());
        assert!(Cli::try_parse_from(["nimbus", "key", "list", "--tenant", "acme"]).is_ok());
    }
}
