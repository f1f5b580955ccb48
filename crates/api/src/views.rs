//! What the API answers with: the answer types live in `courier_core::views`, so that
//! its clients (the CLI, callback receivers through the worker) read the same types.

pub use courier_core::views::*;
