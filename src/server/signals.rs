//! The signals `serve` answers: SIGINT/SIGTERM stop it, SIGHUP re-provisions the extensions,
//! SIGUSR1 lists the ENUM cache in the log and SIGUSR2 flushes it.

/// The operator's handles on the ENUM cache while there is no dashboard for it: SIGUSR1 logs
/// every entry (domain, type, answer, time left), SIGUSR2 flushes the cache.
pub(super) fn spawn_cache_signals(resolver: crate::routing::EnumResolver) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut show), Ok(mut flush)) = (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::warn!("cannot install SIGUSR1/SIGUSR2 handlers for the ENUM cache");
            return;
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = show.recv() => {
                        let entries = resolver.cache_entries();
                        tracing::info!(entries = entries.len(), "ENUM cache (SIGUSR1)");
                        for e in entries {
                            tracing::info!(
                                "ENUM cache: {} {:?} {:?} expires in {} s",
                                e.domain,
                                e.qtype,
                                e.answer,
                                e.expires_in.as_secs()
                            );
                        }
                    }
                    Some(()) = flush.recv() => {
                        resolver.flush_cache();
                        tracing::info!("ENUM cache flushed (SIGUSR2)");
                    }
                    else => break,
                }
            }
        });
    }
}

/// Sends `()` on `reload` for every SIGHUP (nothing where there is no SIGHUP).
pub(super) fn forward_hangup(reload: tokio::sync::mpsc::Sender<()>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let _ = reload.try_send(());
                    }
                });
            }
            Err(e) => tracing::warn!("no SIGHUP handler: {e}"),
        }
    }
    #[cfg(not(unix))]
    drop(reload);
}

/// Resolves at the first SIGINT or SIGTERM. The handlers are installed at once (before the
/// caller announces it is ready) and waited on in a task of their own; what is returned only
/// waits for that task's word. The SIP loop polls its stop branch on every wake-up, and polling
/// the two signal streams there cost ~14 K instructions per call (issue 22); a oneshot
/// receiver costs an atomic load.
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        tokio::spawn(async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            let _ = tx.send(());
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(());
    });
    async move {
        // The waiting task dropped without a signal (the runtime is going away): no stop.
        if rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
