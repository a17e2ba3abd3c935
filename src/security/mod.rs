//! Defences against password guessing and credential abuse, each in its own module:
//! [`guard`] (failed-authentication back-off and temporary bans per source, locks per
//! account), [`net`] (the networks of an extension's allow-list) and [`password`] (the one
//! password-strength policy, for the configuration file and the dashboard alike).

pub mod guard;
pub mod net;
pub mod password;
pub mod report;
