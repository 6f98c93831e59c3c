//! Who asked for this run: under `sudo`, the user behind it, whose files and commands are theirs.
//!
//! `sudo` sets `SUDO_UID` and `SUDO_GID`. When we run as root with those set, files we create
//! are given to that user and a launched command runs as that user (see [`crate::process::launch`]);
//! a symlink at an output path is followed only when it belongs to root or to that user.

use std::{
    ffi::{CStr, CString, OsString},
    os::unix::ffi::OsStringExt,
};

/// The user a root run under `sudo` acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoker {
    pub uid: u32,
    pub gid: u32,
    /// Login name, home directory and supplementary groups, from the user database (empty
    /// when the uid has no entry there).
    pub name: OsString,
    pub home: OsString,
    pub groups: Vec<libc::gid_t>,
}

fn env_id(var: &str) -> Option<u32> {
    std::env::var(var).ok()?.trim().parse().ok()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid whose symlinks we trust besides root's: the sudo user, or whoever runs us.
pub fn trusted_uid() -> u32 {
    match sudo_ids() {
        Some((uid, _)) => uid,
        // SAFETY: getuid has no preconditions.
        None => unsafe { libc::getuid() },
    }
}

/// `(SUDO_UID, SUDO_GID)` when we are root acting for another user.
pub fn sudo_ids() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let uid = env_id("SUDO_UID")?;
    let gid = env_id("SUDO_GID")?;
    (uid != 0).then_some((uid, gid))
}

/// The sudo user with their name, home and groups, when we are root under sudo.
pub fn sudo_invoker() -> Option<Invoker> {
    let (uid, gid) = sudo_ids()?;
    let (name, home) = passwd_entry(uid).unwrap_or_default();
    let groups = if name.is_empty() {
        vec![gid]
    } else {
        group_list(&name, gid)
    };
    Some(Invoker {
        uid,
        gid,
        name,
        home,
        groups,
    })
}

/// Name and home directory of `uid` in the user database.
fn passwd_entry(uid: u32) -> Option<(OsString, OsString)> {
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the given sizes; result tells whether pwd was filled.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r filled pwd with NUL-terminated strings inside buf.
    let (name, home) = unsafe { (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_dir)) };
    Some((
        OsString::from_vec(name.to_bytes().to_vec()),
        OsString::from_vec(home.to_bytes().to_vec()),
    ))
}

/// The supplementary groups of `name` (what `initgroups` would set), `gid` included.
fn group_list(name: &OsString, gid: u32) -> Vec<libc::gid_t> {
    let Ok(cname) = CString::new(name.clone().into_vec()) else {
        return vec![gid];
    };
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: groups has room for n entries; n is updated to the count needed.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return groups;
        }
        if n as usize <= groups.len() || groups.len() >= 1 << 16 {
            return vec![gid];
        }
        groups.resize(n as usize, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_home_and_groups() {
        let (name, home) = passwd_entry(0).expect("root in the user database");
        assert_eq!(name, "root");
        assert!(!home.is_empty());
        assert!(group_list(&name, 0).contains(&0));
    }
}
