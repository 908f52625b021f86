//! The migrations in `sql/` are embedded at compile time (refinery's `embed_migrations!`),
//! which cargo does not track: rebuild when a file there is added or changed.
fn main() {
    println!("cargo:rerun-if-changed=../../sql");
}
