//! Private files: the data dir, the event log and the spool hold conversation data, so what the
//! library creates there is readable by its owner only (folders 0700, files 0600 on Unix). An
//! existing folder keeps the mode it has.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// The mode of the folders the library creates.
pub const DIR_MODE: u32 = 0o700;
/// The mode of the files the library creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each with mode 0700.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)
}

/// Options that create files with mode 0600.
pub fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options
}

/// Creates `path` (truncating it) with mode 0600.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    private_options().write(true).create(true).truncate(true).open(path)
}

/// Writes a new file with mode 0600; fails with `AlreadyExists` when there is one.
pub fn write_private_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = private_options().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
