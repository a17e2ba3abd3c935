//! Number routing: from what a user dialled to where the call goes.
//!
//! The parts, each with one job:
//!
//! - [`numbering`]: the numbering plan. It turns dialled digits in the local habits
//!   (`030 1234567`, `0049 30 1234567`, `+49 (30) 123-4567`, `112`) into an extension, an
//!   emergency or short number, or an E.164 number, categorises E.164 numbers (local, national,
//!   mobile, international, premium) and checks them against an extension's call permissions.
//! - [`naptr`]: ENUM (RFC 6116, RFC 3761) NAPTR handling: the number's domain under an ENUM
//!   tree, the choice among NAPTR records by order, preference and enumservice, and the RFC 3402
//!   substitution expression (POSIX ERE with back-references) that yields the target URI.
//!
//! - [`router`]: the decision — extension, SIP targets from the routing sources (asked in
//!   parallel under one budget), PSTN trunks — with every step recorded for the explainer.
//! - [`forwarding`]: an extension's call forwarding and ring order, and the feature codes.
//! - [`setup`]: builds the router from the configuration.
//! - [`trunk_health`]: which trunks the OPTIONS qualify found down (the router skips them).
//! - [`dundi`]: DUNDi peering (RFC 7378, Asterisk pbx_dundi): codec, crypto, engine, service.
//! - [`zone_server`]: the embedded authoritative DNS server (the private ENUM zone; DNS tests).

pub mod dundi;
pub mod enum_config;
pub mod enum_lookup;
pub mod forwarding;
pub mod least_cost;
pub mod locate;
pub mod naptr;
pub mod numbering;
pub mod pickup;
pub mod router;
pub mod setup;
pub mod trunk;
pub mod trunk_health;
pub mod zone_server;

pub use naptr::{
    apply_regexp, enum_domain, enum_service, select, EnumService, Naptr, NaptrChain, NaptrError,
    NaptrOutcome,
};

pub use numbering::{
    Category, Dialled, NumberError, NumberingPlan, Permission, PermissionError, Permissions, E164,
};

pub use enum_lookup::{
    CacheEntryView, CacheHit, EnumAnswer, EnumResolver, EnumSettings, EnumTarget, LookupStep,
    QueryType, ResolverError, StepOutcome,
};
pub use locate::{
    naptr_srv_names, order_srv, plan, Destination, LocateError, Location, Locator, Plan, SrvRecord,
};
pub use zone_server::{enum_zone, Zone, ZoneError, ZoneRecord, ZoneServer};
