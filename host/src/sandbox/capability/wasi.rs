//! WASI, linked with nothing behind it: no preopened directories, no environment or
//! arguments, no network, an empty stdin. Standard-library code works (clocks,
//! randomness, stdout and stderr to the tenant's log); nothing outside the sandbox is
//! reachable. Every wait a guest can make (a clock sleep, `wasi:io/poll`, blocking
//! stream I/O) is an async host call that ends when its batch's deadline does, since
//! guests run as futures the host cancels (`sandbox::instance`).

use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtx;

use super::Disposition;
use super::log::{GuestStdio, TenantLabel, TenantLog};
use crate::sandbox::guest_state::GuestState;

/// Links WASI 0.2 (the async implementation) into `linker`.
pub(super) fn link(linker: &mut Linker<GuestState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    Ok(())
}

/// The WASI context of one guest: stdout and stderr to its log, nothing else.
pub(crate) fn context(label: &TenantLabel, log: &Arc<TenantLog>) -> WasiCtx {
    WasiCtx::builder()
        .stdout(GuestStdio::new(label.clone(), log.clone(), "stdout"))
        .stderr(GuestStdio::new(label.clone(), log.clone(), "stderr"))
        .allow_blocking_current_thread(false)
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .build()
}

/// What a WASI import (`wasi:<package>/<interface>@<version>`) gets here; `None`
/// for the interfaces it does not serve, which are refused (`wasi:http` is a
/// capability of its own, [`super::http`]).
pub fn disposition(import: &str) -> Option<Disposition> {
    let interface = import.split('@').next().unwrap_or(import);
    let inert = |what| Disposition::Inert { what, only_fails: false };
    let fails = |what| Disposition::Inert { what, only_fails: true };
    Some(match interface {
        "wasi:cli/stdout" | "wasi:cli/stderr" => Disposition::Linked("lines go to the tenant's log, rate-limited"),
        "wasi:cli/stdin" => inert("empty: reads end at once"),
        "wasi:cli/environment" => inert("no environment variables, no arguments"),
        "wasi:cli/exit" => Disposition::Linked("exiting ends the call as a fault"),
        "wasi:cli/terminal-input"
        | "wasi:cli/terminal-output"
        | "wasi:cli/terminal-stdin"
        | "wasi:cli/terminal-stdout"
        | "wasi:cli/terminal-stderr" => inert("no terminal"),
        "wasi:clocks/monotonic-clock" => Disposition::Linked("time is real; sleeps end at the batch deadline"),
        "wasi:clocks/wall-clock" => Disposition::Linked("the host's wall clock"),
        "wasi:io/error" | "wasi:io/streams" => Disposition::Linked("streams; blocking I/O ends at the batch deadline"),
        "wasi:io/poll" => Disposition::Linked("waits end at the batch deadline"),
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => {
            Disposition::Linked("the host's randomness")
        }
        "wasi:filesystem/types" => fails("no directory is preopened: every file operation fails"),
        "wasi:filesystem/preopens" => fails("no directory is preopened"),
        "wasi:sockets/network"
        | "wasi:sockets/instance-network"
        | "wasi:sockets/tcp"
        | "wasi:sockets/tcp-create-socket"
        | "wasi:sockets/udp"
        | "wasi:sockets/udp-create-socket"
        | "wasi:sockets/ip-name-lookup" => fails("network access is denied: every socket operation fails"),
        _ => return None,
    })
}
