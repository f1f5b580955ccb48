//! What the API answers with, built from what core knows: the types are
//! `courier-wire`'s (re-exported here), which clients such as the `courier` CLI read
//! without depending on this crate. One module per resource.

mod flows;
mod jobs;
mod queues;
mod schedules;

pub use courier_wire::*;
pub use flows::{flow_key_view, queue_settings_view};
pub use queues::queue_view;
pub use schedules::schedule_view;
