//! The two recipes of the aienv image — the Dockerfile users build and tools/images/build.sh,
//! which builds the same image from Debian packages for the test node — must not drift: one
//! package list, one Debian release, one user, one entrypoint.

use aienv_tests::testenv::workspace_root;

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `NAME=value` of a shell assignment in build.sh.
fn shell_var(script: &str, name: &str) -> String {
    script
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("build.sh sets no {name}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn dockerfile_and_debootstrap_recipe_agree() {
    let dockerfile = read("Dockerfile");
    let script = read("tools/images/build.sh");
    let packages = read("tools/images/packages/aienv.txt");
    let listed: Vec<&str> = packages
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(listed.contains(&"postgresql-client-17"), "{listed:?}");
    assert!(listed.contains(&"ca-certificates"), "{listed:?}");

    // Both install exactly the list: the Dockerfile copies the file and installs what it names,
    // and names no package of its own.
    assert!(
        dockerfile.contains("COPY tools/images/packages/aienv.txt /tmp/packages.txt"),
        "the Dockerfile must install from tools/images/packages/aienv.txt"
    );
    assert!(dockerfile.contains("$(grep -Ev '^\\s*(#|$)' /tmp/packages.txt)"));
    for p in &listed {
        assert!(
            !dockerfile.contains(p),
            "the Dockerfile names {p} itself: keep packages in aienv.txt only"
        );
    }
    assert!(script.contains(r#"packages() { grep -Ev '^\s*(#|$)' "$HERE/packages/$1.txt""#));

    // Same Debian release.
    let suite = shell_var(&script, "SUITE");
    let runtime_base = dockerfile
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .unwrap();
    assert_eq!(runtime_base, format!("FROM debian:{suite}-slim"));

    // Same user and entrypoint.
    let uid = shell_var(&script, "AIENV_UID");
    assert!(dockerfile.contains(&format!("USER {uid}:{uid}")));
    assert!(dockerfile.contains(&format!("aienv:x:{uid}:{uid}:aienv:/home/aienv")));
    assert!(script.contains(r#"aienv:x:$AIENV_UID:$AIENV_UID:aienv:/home/aienv"#));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/aienv"]"#));
    // build.sh's images are their binary at /usr/local/bin/NAME as entrypoint; aienv's is named aienv.
    assert!(script.contains(r#"--config.entrypoint "/usr/local/bin/$name""#));
    assert!(script.contains(r#"binary_image aienv "$1" aienv.local/aienv:dev"#));
    assert!(
        dockerfile.contains("COPY --from=build /src/target/release/aienv /usr/local/bin/aienv")
    );
}
