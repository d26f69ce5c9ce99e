//! The collector's services: storage housekeeping ([`housekeeping`]), the HTTP API ([`api`]), the web
//! console ([`console`]), and the collector that runs them all ([`collector`]).

pub mod api;
pub mod collector;
pub mod console;
pub mod housekeeping;
pub mod reload;
