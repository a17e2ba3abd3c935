//! The registrar driven by sipp (Debian `sip-tester`), one server per test, each scenario over UDP
//! and over TCP. Scenarios live in tests/sipp/.
mod common;

use common::{config, sipp, Server, MD5_ONLY};

const AUTH: &[&str] = &["-s", "100", "-au", "100", "-ap", "secret100"];

/// Starts a server (MD5-only challenges, see `common::MD5_ONLY`, plus `sip_extra`), runs the
/// scenario, asserts that sipp succeeded and that the server still answers OPTIONS.
fn run(scenario: &str, transport: &str, sip_extra: &str, extra: &[&str]) -> common::SippResult {
    common::require_program("sipp", "sip-tester");
    let mut server = Server::start(&config(&format!("{MD5_ONLY}\n{sip_extra}")));
    let remote = if transport == "u1" {
        server.udp
    } else {
        server.tcp
    };
    let res = sipp(server.dir(), scenario, remote, transport, extra);
    res.assert_success(&server);
    server.assert_alive();
    res
}

fn with_auth(more: &[&'static str]) -> Vec<&'static str> {
    let mut v = AUTH.to_vec();
    v.extend_from_slice(more);
    v
}

macro_rules! both_transports {
    ($name:ident, $scenario:expr, $sip_extra:expr, $args:expr) => {
        mod $name {
            #[test]
            fn udp() {
                #[allow(unused_imports)]
                use super::*;
                run($scenario, "u1", $sip_extra, &$args);
            }
            #[test]
            fn tcp() {
                #[allow(unused_imports)]
                use super::*;
                run($scenario, "t1", $sip_extra, &$args);
            }
        }
    };
}

both_transports!(options, "options.xml", "", ["-s", "100"]);
both_transports!(register_auth, "register_auth.xml", "", with_auth(&[]));
both_transports!(
    register_wrong_password,
    "register_wrong_password.xml",
    "",
    ["-s", "100", "-au", "100", "-ap", "wrong"]
);
// nonce_ttl_secs = 2, the scenario pauses 3.5 s before reusing the old nonce.
both_transports!(
    register_stale_nonce,
    "register_stale_nonce.xml",
    "nonce_ttl_secs = 2",
    with_auth(&["-d", "3500"])
);
both_transports!(register_refresh, "register_refresh.xml", "", with_auth(&[]));
both_transports!(unregister, "unregister.xml", "", with_auth(&[]));
// common::config sets min_expires = 60; the scenario asks for 10 s and expects Min-Expires: 60.
both_transports!(
    register_too_brief,
    "register_too_brief.xml",
    "",
    with_auth(&[])
);
both_transports!(register_query, "register_query.xml", "", with_auth(&[]));
