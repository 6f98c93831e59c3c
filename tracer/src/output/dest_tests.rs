//! Destinations checked and written as root would: devices, symlinks, temporary files.

use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};

use super::*;

/// A fresh directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tracer-dest-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let dest = check_file(path, false)?;
    Ok(write_to(&dest, |out| Ok(out.write_all(text.as_bytes())?))?)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn devices_are_written_through_not_replaced() {
    let dest = check_file(Path::new("/dev/null"), false).unwrap();
    assert!(matches!(dest, Dest::Through { .. }), "{dest:?}");
    write(Path::new("/dev/null"), "{}").unwrap();
    let meta = fs::symlink_metadata("/dev/null").unwrap();
    assert!(meta.file_type().is_char_device(), "/dev/null was replaced");
    // /dev/full: the write fails and says where.
    let err = write(Path::new("/dev/full"), &"x".repeat(1 << 20)).unwrap_err();
    assert!(format!("{err:#}").contains("writing /dev/full"), "{err:#}");
    assert!(
        fs::symlink_metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

#[test]
fn fifos_are_written_through() {
    let dir = scratch("fifo");
    let fifo = dir.join("pipe");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read_to_string(fifo).unwrap())
    };
    write(&fifo, "through the pipe").unwrap();
    assert_eq!(reader.join().unwrap(), "through the pipe");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn own_descriptors_are_shared_not_reopened() {
    assert_eq!(own_fd(Path::new("-")), Some(1));
    assert_eq!(own_fd(Path::new("/dev/stdout")), Some(1));
    assert_eq!(own_fd(Path::new("/dev/stderr")), Some(2));
    assert_eq!(own_fd(Path::new("/dev/fd/7")), Some(7));
    assert_eq!(own_fd(Path::new("/proc/self/fd/9")), Some(9));
    assert_eq!(own_fd(Path::new("out.json")), None);
    assert!(check_file(Path::new("-"), false).unwrap().is_stdout());
    let err = check_file(Path::new("/dev/fd/987"), false).unwrap_err();
    assert!(
        matches!(err, DestError::ClosedDescriptor { fd: 987, .. }),
        "{err}"
    );

    // A descriptor given as /dev/fd/N gets the report at its current offset.
    let dir = scratch("fd");
    let path = dir.join("shared");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"before;").unwrap();
    let shown = PathBuf::from(format!("/dev/fd/{}", file.as_raw_fd()));
    write(&shown, "report").unwrap();
    file.write_all(b";after").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "before;report;after");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn regular_files_are_replaced_atomically_and_keep_their_mode() {
    let dir = scratch("file");
    let path = dir.join("out.json");
    write(&path, "first").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::metadata(&path).unwrap().ino();
    write(&path, "second").unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "second");
    let meta = fs::metadata(&path).unwrap();
    assert_ne!(
        meta.ino(),
        before,
        "replaced by rename, not rewritten in place"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(names(&dir), ["out.json"], "no temporary file left");

    // A render that fails leaves the old file and no temporary file.
    let dest = check_file(&path, false).unwrap();
    let err = write_to(&dest, |out| {
        out.write_all(b"half")?;
        Err("render failed".into())
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("render failed"), "{err:#}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "second");
    assert_eq!(names(&dir), ["out.json"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn planted_symlinks_are_refused_or_replaced_never_followed_blindly() {
    let dir = scratch("symlink");
    let victim = dir.join("victim");
    fs::write(&victim, "precious").unwrap();

    // A symlink owned by another user at the output path: refused, victim untouched.
    let planted = dir.join("out.json");
    symlink(&victim, &planted).unwrap();
    std::os::unix::fs::lchown(&planted, Some(65534), None).unwrap();
    let err = write(&planted, "report").unwrap_err();
    assert!(
        err.to_string().contains("symlink owned by uid 65534"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");

    // The old predictable temporary name is not used: a symlink there changes nothing.
    let report = dir.join("report.json");
    let old_tmp = dir.join("report.tmp~");
    symlink(&victim, &old_tmp).unwrap();
    std::os::unix::fs::lchown(&old_tmp, Some(65534), None).unwrap();
    write(&report, "report").unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(fs::read_to_string(&report).unwrap(), "report");

    // Our own symlink (root's here) is followed: the file it names gets the report and the
    // link stays a link.
    let ours = dir.join("ours.json");
    let target = dir.join("target.json");
    symlink("target.json", &ours).unwrap();
    write(&ours, "through our link").unwrap();
    assert!(
        fs::symlink_metadata(&ours)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "through our link");

    // A symlinked --svg directory of another user is refused too.
    let real = dir.join("real-dir");
    fs::create_dir(&real).unwrap();
    let svg = dir.join("svg");
    symlink(&real, &svg).unwrap();
    std::os::unix::fs::lchown(&svg, Some(65534), None).unwrap();
    let err = check_dir(&svg).unwrap_err();
    assert!(
        matches!(err, DestError::UntrustedSymlink { owner: 65534, .. }),
        "{err}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_paths_are_named_before_anything_runs() {
    let dir = scratch("bad");
    let err = check_file(Path::new("/nonexistent/dir/x.json"), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/dir/x.json: the directory /nonexistent/dir does not exist"
    );
    let err = check_file(&dir, false).unwrap_err();
    assert!(matches!(err, DestError::IsDirectory { .. }), "{err}");
    let file = dir.join("plain");
    fs::write(&file, "").unwrap();
    let err = check_file(&file.join("x.json"), false).unwrap_err();
    assert!(matches!(err, DestError::ParentNotDirectory { .. }), "{err}");
    let err = check_dir(&file).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{} exists and is not a directory", file.display())
    );
    let new = check_dir(&dir.join("charts")).unwrap();
    assert!(!new.exists);
    new.file("a.svg").unwrap();
    assert!(dir.join("charts").is_dir());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snapshots_go_beside_the_report_and_devices_stay_devices() {
    let dir = scratch("suffix");
    let dest = check_file(&dir.join("out.json"), false).unwrap();
    let snap = dest.suffixed("20261201T210000.123Z");
    assert_eq!(
        snap.shown(),
        dir.join("out.20261201T210000.123Z.json").as_path()
    );
    write_to(&snap, |out| Ok(out.write_all(b"{}")?)).unwrap();
    let bare = check_file(&dir.join("profile"), true)
        .unwrap()
        .suffixed("S");
    write_to(&bare, |out| Ok(out.write_all(b"x")?)).unwrap();
    assert_eq!(names(&dir), ["out.20261201T210000.123Z.json", "profile.S"]);
    let null = check_file(Path::new("/dev/null"), false).unwrap();
    assert_eq!(null.suffixed("S"), null);
    let charts = check_dir(&dir.join("charts")).unwrap().suffixed("S");
    charts.file("a.svg").unwrap();
    assert!(dir.join("charts.S").is_dir());
}

#[test]
fn a_published_sink_is_visible_while_it_is_written() {
    let dir = scratch("publish");
    let path = dir.join("live.jsonl");
    write(&path, "old").unwrap();
    let mut sink = Sink::open(&check_file(&path, false).unwrap()).unwrap();
    sink.write_all(b"{\"n\":1}\n").unwrap();
    sink.publish().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "{\"n\":1}\n");
    sink.write_all(b"{\"n\":2}\n").unwrap();
    sink.flush().unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
    sink.commit().unwrap();
    assert_eq!(names(&dir), ["live.jsonl"]);
}

/// What a killed tracer left (`.NAME.PID.RANDOM.tmp` of a pid no longer running) is removed by
/// the next write of NAME; a running tracer's, and anything of another shape, stay.
#[test]
fn temporary_files_of_a_killed_tracer_are_removed_by_the_next_write() {
    let dir = scratch("stale");
    let me = std::process::id();
    let stale = ".out.json.4000000000.0123abcd.tmp";
    let running = format!(".out.json.{me}.89abcdef.tmp");
    for keep in [
        stale,
        running.as_str(),
        ".out.json.tmp",
        ".other.4000000000.0123abcd.tmp",
    ] {
        fs::write(dir.join(keep), "x").unwrap();
    }
    write(&dir.join("out.json"), "{}").unwrap();
    let mut left = names(&dir);
    left.retain(|n| n != "out.json");
    let mut want = vec![
        running.clone(),
        ".other.4000000000.0123abcd.tmp".to_string(),
        ".out.json.tmp".to_string(),
    ];
    want.sort();
    assert_eq!(left, want);
    fs::remove_dir_all(&dir).unwrap();
}

/// `--jsonl-max`: past the bound, the newest whole lines within half of it are kept, and what
/// is written next follows them.
#[test]
fn a_bounded_file_keeps_its_newest_whole_lines() {
    let dir = scratch("bounded");
    let path = dir.join("live.jsonl");
    let mut sink = Sink::open(&check_file(&path, false).unwrap()).unwrap();
    sink.publish().unwrap();
    for i in 0..100 {
        writeln!(sink, "{{\"line\": {i:05}}}").unwrap();
        sink.keep_newest_lines(1000).unwrap();
    }
    writeln!(sink, "{{\"line\": \"last\"}}").unwrap();
    sink.commit().unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.len() <= 1000 + 20, "{} bytes", text.len());
    assert!(lines.len() > 20, "{lines:?}");
    // Whole lines, in order, ending with the newest.
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("{\"line\": ") && l.ends_with('}'))
    );
    assert_eq!(lines[lines.len() - 2], "{\"line\": 00099}");
    assert_eq!(lines[lines.len() - 1], "{\"line\": \"last\"}");
    fs::remove_dir_all(&dir).unwrap();
}
