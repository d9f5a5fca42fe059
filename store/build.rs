//! `sqlx::migrate!` embeds `../migrations/*` at compile time, but cargo does
//! not know it reads them: without this an edited migration would not
//! rebuild the crate and stale SQL would be applied.

fn main() {
    println!("cargo:rerun-if-changed=../migrations/sqlite");
    println!("cargo:rerun-if-changed=../migrations/postgres");
}
