//! The `pasarela` command line: parses arguments, loads the configuration, and dispatches to
//! the subcommands (`serve`, `check-config`, `route`, `dundi`).
//!
//! Exit status: 0 on success, 2 for a usage or configuration error, 1 for any other failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pasarela::config::{Config, ConfigError};

/// Exit status for usage and configuration errors (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;
/// Exit status for other failures.
const EXIT_FAILURE: u8 = 1;

/// SIP registrar, back-to-back user agent and PSTN gateway for small offices.
#[derive(Debug, Parser)]
#[command(name = "pasarela", version, propagate_version = true)]
#[command(
    after_help = "Without --config, the built-in defaults are used: SIP on udp and tcp \
    0.0.0.0:5060, database ./pasarela.db, dashboard on 127.0.0.1:8080.\n\
    Logging goes to stderr; RUST_LOG, when set, overrides the log.level config key."
)]
struct Cli {
    /// Read the configuration from FILE (TOML) instead of using the built-in defaults.
    /// Accepted before or after the command.
    #[arg(short = 'c', long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the registrar, B2BUA and gateway in the foreground until stopped.
    ///
    /// Loads and validates the configuration first; a configuration error is printed as
    /// FILE:LINE: key `KEY`: problem, and the exit status is 2.
    ///
    /// Once the sockets are bound it prints `listening sip PROTO ADDR`, `listening web ADDR`
    /// (and `listening dns ADDR` for the private ENUM zone), then `ready`. The web address
    /// serves /healthz and Prometheus /metrics. Under systemd (NOTIFY_SOCKET set) it reports
    /// READY=1 at that point and sends WATCHDOG=1 every half WATCHDOG_USEC. SIGTERM or SIGINT
    /// stop it after the pending records are written (exit status 0).
    Serve,
    /// Validate the configuration and print a one-line summary, without starting anything.
    ///
    /// Prints "FILE: ok" and a summary and exits 0 if the configuration is valid; otherwise
    /// prints the error (FILE:LINE: key `KEY`: problem) to stderr and exits 2.
    CheckConfig,
    /// Show where a call to NUMBER would go, and why, without placing it.
    ///
    /// Prints the number as the numbering plan understands it (E.164 and category), the
    /// caller's permissions, every ENUM lookup and server location with its timing and answer,
    /// and the decision: an extension, the SIP targets and PSTN trunks in the order they would
    /// be tried, or the rejection (SIP status and reason). Uses the same configuration, DNS
    /// servers and extensions (config file and store) as `serve`.
    Route {
        /// The number as a phone would dial it (`030 1234567`, `+49301234567`, `112`, `101`).
        number: String,
        /// The calling extension, whose call permissions apply (default: no restriction).
        #[arg(long, value_name = "EXT")]
        from: Option<String>,
    },
    /// DUNDi peering: make keys, and ask the running gateway (through its control socket
    /// beside the database) about its peers, its answer cache or a number. When `serve` is not
    /// running, `peers` and `lookup` use a DUNDi node of their own on a free port.
    Dundi {
        #[command(subcommand)]
        command: DundiCommand,
    },
    /// Sources banned after failed SIP authentications, asked of the running gateway
    /// through its control socket: `bans list`, `bans lift ADDR`, `bans unlock EXT`.
    Bans {
        #[command(subcommand)]
        command: BansCommand,
    },
    /// GSM modem lines (`[[modem]]`).
    Modem {
        #[command(subcommand)]
        action: ModemCommand,
    },
    /// Write a backup to FILE: a consistent snapshot of the store (safe while `serve` runs),
    /// with the configuration file and the key files it names.
    Backup {
        /// The backup file to write (must not exist).
        file: PathBuf,
    },
    /// Rate the calls of MONTH (YYYY-MM in the office's time zone, `[web] time_zone`; default
    /// this month) again with the current rates, after a rate was added or corrected. Safe
    /// while `serve` runs. `--all` re-rates every record.
    Rerate {
        /// The month, as YYYY-MM.
        month: Option<String>,
        /// Every record, whatever its month.
        #[arg(long, conflicts_with = "month")]
        all: bool,
    },
    /// Dashboard accounts.
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
    /// Put the store of a backup FILE back (stop `serve` first). With `--files`, also the
    /// configuration and key files, at the paths they were backed up from.
    Restore {
        /// A file written by `pasarela backup` (or downloaded from the dashboard).
        file: PathBuf,
        /// Also write back the configuration and key files kept in the backup.
        #[arg(long)]
        files: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Give dashboard user USER a new password and end its sessions (works while `serve`
    /// runs). Prints a new random password, or with `--stdin` reads one line as the password.
    ResetPassword {
        /// The dashboard user name.
        user: String,
        /// Read the new password from standard input instead of generating one.
        #[arg(long)]
        stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DundiCommand {
    /// Write a new 1024-bit RSA key pair NAME.key (private, mode 0600) and NAME.pub, in the
    /// format Asterisk reads (give NAME.pub to the peers; they list it as `inkey`).
    Keygen {
        /// The file name without extension (`office` makes office.key and office.pub).
        name: String,
        /// Where to write them.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// List the peers with their reachability (qualify round trip).
    Peers,
    /// List the cached answers; `--flush` empties the cache.
    Cache {
        #[arg(long)]
        flush: bool,
    },
    /// Look NUMBER up at the peers: `4930123456@e164` (the context defaults to e164).
    Lookup {
        /// NUMBER@CONTEXT, the number as E.164 digits without `+`.
        target: String,
        /// Ask the peers even when the answer is cached.
        #[arg(long)]
        bypass_cache: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BansCommand {
    /// List the banned sources (seconds left, bans so far, last extension tried) and the
    /// locked extensions.
    List,
    /// Lift the ban of ADDR (its failure count starts again from zero).
    Lift {
        /// The banned IP address.
        addr: String,
    },
    /// Unlock extension EXT for every address.
    Unlock {
        /// The extension number.
        ext: String,
    },
}

#[derive(Debug, Subcommand)]
enum ModemCommand {
    /// Open every configured modem for up to 20 s and print its state, IMEI, operator and
    /// signal, one line per modem. While `serve` runs it holds the ports: read the dashboard's
    /// /live page or /api/v1/live instead.
    Status,
}

/// mimalloc: SIP handling allocates many small, short-lived strings; it is markedly faster
/// than the system allocator for that pattern (see benches/sip_parse.rs).
/// Built without the `mimalloc` feature, the system allocator is used (for heap profilers).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator's options, set before `main` and before the Rust runtime allocates anything:
/// mimalloc reserves its first arena at the first allocation with the options in force then
/// (set from `main`, they came too late: the idle size stayed 5 MB higher).
#[cfg(feature = "mimalloc")]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = {
    extern "C" fn tune() {
        pasarela::memory::tune_allocator();
    }
    tune
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return config_error(&e),
    };
    match cli.command {
        Command::Serve => serve(config),
        Command::CheckConfig => {
            let report = pasarela::preflight::check(&config, pasarela::preflight::InUse::Warning);
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            if !report.ok() {
                for e in &report.errors {
                    eprintln!("{}: {e}", origin(cli.config.as_deref()));
                }
                return ExitCode::from(EXIT_CONFIG);
            }
            println!("{}: ok", origin(cli.config.as_deref()));
            println!("{}", summary(&config));
            ExitCode::SUCCESS
        }
        Command::Route { number, from } => route(config, &number, from.as_deref()),
        Command::Dundi { command } => dundi(config, command),
        Command::Bans { command } => bans(&config, command),
        Command::Modem {
            action: ModemCommand::Status,
        } => modem_status(config),
        Command::Backup { file } => backup(&config, &file),
        Command::Rerate { month, all } => rerate(&config, month.as_deref(), all),
        Command::Restore { file, files } => restore(&config, &file, files),
        Command::Admin {
            action: AdminCommand::ResetPassword { user, stdin },
        } => reset_password(&config, &user, stdin),
    }
}

/// `pasarela admin reset-password USER [--stdin]`.
fn reset_password(config: &Config, user: &str, stdin: bool) -> ExitCode {
    let typed = if stdin {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            eprintln!("pasarela: admin reset-password: reading the password: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
        Some(line.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        None
    };
    match pasarela::web::accounts::reset_password(&config.store.path, user, typed.as_deref()) {
        Ok(password) => {
            if stdin {
                println!("password of {user} changed; its sessions have ended");
            } else {
                println!("new password for {user}: {password}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pasarela: admin reset-password: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `pasarela rerate [MONTH | --all]`.
fn rerate(config: &Config, month: Option<&str>, all: bool) -> ExitCode {
    let office = pasarela::web::office_time::OfficeTime::new(config.web.time_zone.as_deref());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (label, range) = if all {
        ("every record".to_owned(), Some((i64::MIN, i64::MAX)))
    } else {
        let month = month.map_or_else(|| office.this_month(now_ms), str::to_owned);
        let range = office.parse_month(&month);
        (month, range)
    };
    let Some((from, to)) = range else {
        eprintln!("pasarela: rerate: the month must be YYYY-MM, like 2026-11");
        return ExitCode::from(EXIT_CONFIG);
    };
    if !config.store.path.exists() {
        eprintln!(
            "pasarela: rerate: no store at {} (key store.path): nothing to re-rate",
            config.store.path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let result = pasarela::cdr::CdrDb::open(&config.store.path)
        .and_then(|mut db| pasarela::cdr::rerate(&mut db, from, to));
    match result {
        Ok(changed) => {
            println!(
                "re-rated {label} ({}): {changed} record(s) changed",
                office.name()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pasarela: rerate: {}: {e}", config.store.path.display());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `pasarela backup FILE`.
fn backup(config: &Config, file: &Path) -> ExitCode {
    let files = config.backup_files();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match pasarela::store::backup::backup(&config.store.path, file, &files, now) {
        Ok(info) => {
            println!(
                "wrote {} (store {}, {} file(s): {})",
                file.display(),
                config.store.path.display(),
                info.files.len(),
                info.files
                    .iter()
                    .map(|f| f.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pasarela: backup: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `pasarela restore FILE [--files]`.
fn restore(config: &Config, file: &Path, files: bool) -> ExitCode {
    let socket = pasarela::server::control::socket_path(&config.store.path);
    if pasarela::server::control::is_running(&socket) {
        eprintln!(
            "pasarela: restore: pasarela is running on {}; stop it first \
             (systemctl stop pasarela)",
            config.store.path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    match pasarela::store::backup::restore(file, &config.store.path, files) {
        Ok(info) => {
            println!(
                "restored {} from {} (made by pasarela {} at unix time {}){}",
                config.store.path.display(),
                file.display(),
                info.version,
                info.created_at,
                if files {
                    format!(", and {} file(s)", info.files.len())
                } else if info.files.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} configuration/key file(s) kept in it (restore them with --files)",
                        info.files.len()
                    )
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pasarela: restore: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `pasarela bans …`: bans live in the running `serve`, asked through its control socket.
fn bans(config: &Config, command: BansCommand) -> ExitCode {
    let request = match command {
        BansCommand::List => "bans list".to_owned(),
        BansCommand::Lift { addr } => format!("bans lift {}", addr.trim()),
        BansCommand::Unlock { ext } => format!("bans unlock {}", ext.trim()),
    };
    let socket = pasarela::server::control::socket_path(&config.store.path);
    match pasarela::server::control::ask(&socket, &request) {
        Some(answer) => {
            print!("{answer}");
            if answer.starts_with("error:") {
                ExitCode::from(EXIT_FAILURE)
            } else {
                ExitCode::SUCCESS
            }
        }
        None => {
            eprintln!(
                "pasarela: no running gateway answers on {} (bans live in `serve`)",
                socket.display()
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `pasarela dundi …`.
fn dundi(config: Config, command: DundiCommand) -> ExitCode {
    if let DundiCommand::Keygen { name, dir } = &command {
        return match pasarela::routing::dundi::keygen(dir, name) {
            Ok((key, public)) => {
                println!("wrote {} and {}", key.display(), public.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pasarela: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    // The node as `serve` runs it: the file's `[dundi]` with the dashboard's settings and peers.
    let mut config = config;
    match pasarela::store::dundi_node::for_tools(&config.dundi, &config.store.path) {
        Ok(d) => config.dundi = d,
        Err(e) => eprintln!("pasarela: the dashboard's DUNDi settings not used: {e}"),
    }
    if !config.dundi.enabled {
        eprintln!(
            "pasarela: DUNDi is off (turn it on in the dashboard's DUNDi page, or [dundi] enabled = true)"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let request = match &command {
        DundiCommand::Keygen { .. } => return ExitCode::SUCCESS,
        DundiCommand::Peers => "dundi peers".to_owned(),
        DundiCommand::Cache { flush: false } => "dundi cache".to_owned(),
        DundiCommand::Cache { flush: true } => "dundi cache flush".to_owned(),
        DundiCommand::Lookup {
            target,
            bypass_cache,
        } => format!(
            "dundi lookup {}{}",
            target.split_whitespace().collect::<String>(),
            if *bypass_cache { " bypass" } else { "" }
        ),
    };
    let socket = pasarela::server::control::socket_path(&config.store.path);
    if let Some(answer) = pasarela::server::control::ask(&socket, &request) {
        print!("{answer}");
        return if answer.starts_with("error:") {
            ExitCode::from(EXIT_FAILURE)
        } else {
            ExitCode::SUCCESS
        };
    }
    if matches!(command, DundiCommand::Cache { .. }) {
        eprintln!(
            "pasarela: no running gateway answers on {} (the cache lives in `serve`)",
            socket.display()
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    standalone_dundi(&config, &command)
}

/// `dundi peers` / `dundi lookup` without a running gateway: a node of our own on a free port.
fn standalone_dundi(config: &Config, command: &DundiCommand) -> ExitCode {
    use pasarela::routing::dundi::{report, OfficeDundi};
    if let Err(e) = pasarela::logging::init(&config.log) {
        eprintln!("pasarela: {e}");
    }
    let extensions = config.extensions_for_tools().unwrap_or_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pasarela: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        let bind = std::net::SocketAddr::new(config.dundi.settings.bind.ip(), 0);
        let node = OfficeDundi::start(&config.dundi, &extensions, Some(bind)).await?;
        let text = match command {
            DundiCommand::Lookup {
                target,
                bypass_cache,
            } => {
                let (number, context) = target.split_once('@').unwrap_or((target, "e164"));
                let started = std::time::Instant::now();
                match node
                    .handle
                    .lookup_full(
                        number,
                        context,
                        std::time::Duration::from_secs(5),
                        *bypass_cache,
                    )
                    .await
                {
                    Some(r) => report::lookup(&r, started.elapsed().as_millis()),
                    None => "the DUNDi node stopped\n".to_owned(),
                }
            }
            _ => {
                let peers = node.handle.peers().await;
                for p in &peers {
                    let _ = node.handle.qualify(p.eid).await;
                }
                report::peers(&node.handle.peers().await)
            }
        };
        node.handle.stop().await;
        anyhow::Ok(text)
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pasarela: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `pasarela route`: one routing decision, printed.
fn route(config: Config, number: &str, from: Option<&str>) -> ExitCode {
    if let Err(e) = pasarela::logging::init(&config.log) {
        eprintln!("pasarela: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let extensions = match config.extensions_for_tools() {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("pasarela: reading extensions: {e:#}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pasarela: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut config = config;
    // The numbering plan and ENUM settings of the file and of the dashboard, as `serve` uses them.
    match pasarela::store::numbering::for_tools(&config) {
        Ok((numbering, enum_)) => (config.numbering, config.enum_) = (numbering, enum_),
        Err(e) => eprintln!("pasarela: the dashboard's numbering settings not used: {e}"),
    }
    // The trunks of the file and of the dashboard, as `serve` uses them.
    match pasarela::store::trunks::for_tools(&config.trunks, &config.store.path) {
        Ok(trunks) => config.trunks = trunks,
        Err(e) => {
            eprintln!("pasarela: reading trunks: {e:#}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    // DUNDi as `serve` runs it (the file's and the dashboard's settings).
    match pasarela::store::dundi_node::for_tools(&config.dundi, &config.store.path) {
        Ok(d) => config.dundi = d,
        Err(e) => eprintln!("pasarela: the dashboard's DUNDi settings not used: {e}"),
    }
    // The PSTN lines, as `serve` adds them.
    let lines = pasarela::pstn::routes::line_trunks(&config.modems);
    config.trunks.extend(lines);
    let result = runtime.block_on(async {
        // DUNDi peers are asked from a node of our own on a free port (serve holds 4520);
        // peers know us by EID and answer to the port the query came from.
        let dundi = if config.dundi.enabled {
            let bind = std::net::SocketAddr::new(config.dundi.settings.bind.ip(), 0);
            Some(
                pasarela::routing::dundi::OfficeDundi::start(
                    &config.dundi,
                    &extensions,
                    Some(bind),
                )
                .await?,
            )
        } else {
            None
        };
        let router =
            pasarela::routing::setup::build_router(config.routing(), &extensions, dundi.as_ref())?;
        // The lines' rate tables, for the least-cost order (as `serve` does).
        if config.store.path.exists() {
            let book = pasarela::cdr::CdrDb::open(&config.store.path)?.load_rate_book()?;
            router.set_line_prices(std::sync::Arc::new(book));
        }
        anyhow::Ok(router.route(from, number).await)
    });
    match result {
        Ok(route) => {
            println!("{route}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pasarela: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `pasarela modem status`: each configured modem's state, read from the modem itself.
fn modem_status(config: Config) -> ExitCode {
    if let Err(e) = pasarela::logging::init(&config.log) {
        eprintln!("pasarela: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if config.modems.is_empty() {
        println!("no [[modem]] configured");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pasarela: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let statuses = runtime.block_on(pasarela::pstn::LinePool::probe_status(
        &config.modems,
        std::time::Duration::from_secs(20),
    ));
    let mut all_up = true;
    for s in &statuses {
        println!("{}", s.summary());
        all_up &= s.state == pasarela::pstn::LineState::Idle;
    }
    if !all_up {
        println!(
            "note: a modem that is down may be held by a running `pasarela serve`; its dashboard \
             shows the lines on /live (JSON: /api/v1/live)"
        );
    }
    ExitCode::SUCCESS
}

fn config_error(e: &ConfigError) -> ExitCode {
    // Printed as is, so the line starts with FILE:LINE for editors and scripts.
    eprintln!("{e}");
    ExitCode::from(EXIT_CONFIG)
}

fn origin(path: Option<&Path>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "(built-in defaults)".to_owned(),
    }
}

fn serve(config: Config) -> ExitCode {
    if let Err(e) = pasarela::logging::init(&config.log) {
        eprintln!("pasarela: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    // Checked before anything is created (the store, the control socket): a start that cannot
    // succeed exits 2, which the packaged unit does not restart.
    let report = pasarela::preflight::check(&config, pasarela::preflight::InUse::Error);
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    if !report.ok() {
        let origin = origin(config.source.as_deref());
        for e in &report.errors {
            tracing::error!("{e}");
            eprintln!("pasarela: {origin}: {e}");
        }
        return ExitCode::from(EXIT_CONFIG);
    }
    let first_run = !config.store.path.exists();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pasarela")
        // An idle worker gives back what other threads freed of its heap after housekeeping.
        .on_thread_park(|| {
            pasarela::memory::give_back_if_asked();
        })
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pasarela: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match &config.source {
        Some(path) => tracing::info!(config = %path.display(), "starting pasarela"),
        None => tracing::info!("starting pasarela on built-in defaults"),
    }
    eprintln!(
        "{}",
        pasarela::server::first_run::banner(&config, first_run)
    );
    match runtime.block_on(pasarela::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pasarela: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// One line describing what the configuration sets up.
fn summary(config: &Config) -> String {
    let listen: Vec<String> = config.sip.listen.iter().map(|l| l.to_string()).collect();
    let enabled = config.extensions.iter().filter(|e| e.enabled).count();
    let nameservers = if config.enum_.nameservers.is_empty() {
        "system resolver".to_owned()
    } else {
        config
            .enum_
            .nameservers
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dundi = if config.dundi.enabled {
        format!(
            "dundi {} with {} peer(s), {} mapping(s)",
            config.dundi.settings.bind,
            config.dundi.settings.peers.len(),
            config.dundi.settings.mappings.len()
        )
    } else {
        "dundi off".to_owned()
    };
    format!(
        "domain {}; sip {}; rtp {}-{}; store {}; web {}; enum {} via {}; {dundi}; {} extension(s) ({} enabled); log {}",
        config.sip.domain,
        listen.join(", "),
        config.media.rtp_ports.start(),
        config.media.rtp_ports.end(),
        config.store.path.display(),
        match config.web.https {
            Some(https) => format!("{} and https {https}", config.web.listen),
            None => config.web.listen.to_string(),
        },
        config.enum_.suffixes.join(", "),
        nameservers,
        config.extensions.len(),
        enabled,
        config.log.level,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_flag_is_global() {
        let before = Cli::try_parse_from(["pasarela", "--config", "a.toml", "serve"]).unwrap();
        assert_eq!(before.config.as_deref(), Some(Path::new("a.toml")));
        assert!(matches!(before.command, Command::Serve));
        let after =
            Cli::try_parse_from(["pasarela", "check-config", "--config", "b.toml"]).unwrap();
        assert_eq!(after.config.as_deref(), Some(Path::new("b.toml")));
        assert!(matches!(after.command, Command::CheckConfig));
        let none = Cli::try_parse_from(["pasarela", "serve"]).unwrap();
        assert_eq!(none.config, None);
        assert!(Cli::try_parse_from(["pasarela"]).is_err());
    }

    #[test]
    fn summary_of_defaults() {
        let s = summary(&Config::default());
        assert!(s.contains("udp:0.0.0.0:5060, tcp:0.0.0.0:5060"), "{s}");
        assert!(s.contains("0 extension(s)"), "{s}");
        assert!(!s.contains('\n'));
    }
}
