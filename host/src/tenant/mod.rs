//! The tenant's path from an idea to a running processor, as `ferry` commands
//! (docs/tenants.md walks through it, and a test runs every command in it):
//!
//! | module | command |
//! | --- | --- |
//! | [`trial`] | `ferry test`: the component on sample records in the real sandbox, with a golden file |
//! | [`records`] | the sample-record format (JSON lines) those commands read and print |

mod diff;
pub mod records;
pub mod trial;
