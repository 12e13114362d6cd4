//! Helpers shared by the storage tests that damage a database on purpose.

use std::fs;
use std::path::Path;

/// Copies a live database directory as a crash would leave it (the page
/// cache holds every written byte; the copy reads them).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
