//! Alerts: the store of raised alerts and their workflow ([`store`]), suppressions ([`suppress`]), rule
//! loading and rendering ([`rules`]), detection over the live log ([`live`]) and delivery to webhooks,
//! Alertmanager, PagerDuty and Slack ([`outbox`]).

pub mod live;
pub mod outbox;
pub mod payload;
pub mod rules;
pub mod store;
pub mod suppress;
