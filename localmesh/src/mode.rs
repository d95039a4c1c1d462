//! Which of the two modes a local mesh runs in, and why.

use clap::ValueEnum;

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Mode {
    /// Network namespaces with eBPF when possible, else loopback.
    #[default]
    Auto,
    /// Network namespaces with eBPF redirection (root, capable kernel).
    Netns,
    /// Loopback addresses and the ztunnels' SOCKS5 entry (any user).
    Loopback,
}

/// The two ways a local mesh can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    Netns,
    Loopback,
}

impl Chosen {
    pub fn name(self) -> &'static str {
        match self {
            Chosen::Netns => "netns",
            Chosen::Loopback => "loopback",
        }
    }
}

/// The mode to run in and why; `probe` says whether netns + eBPF can run here.
pub fn decide(
    mode: Mode,
    probe: impl FnOnce() -> Result<(), String>,
) -> Result<(Chosen, String), Error> {
    match mode {
        Mode::Loopback => Ok((Chosen::Loopback, "requested with --mode loopback".into())),
        Mode::Netns => match probe() {
            Ok(()) => Ok((
                Chosen::Netns,
                "requested with --mode netns; the eBPF redirection loads here".into(),
            )),
            Err(why) => Err(Error::NetnsUnavailable(why)),
        },
        Mode::Auto => Ok(match probe() {
            Ok(()) => (
                Chosen::Netns,
                "running as root and the eBPF redirection loads (probed in a throw-away namespace)"
                    .into(),
            ),
            Err(why) => (
                Chosen::Loopback,
                format!("netns + eBPF is not possible here: {why}; loopback works for any user"),
            ),
        }),
    }
}

/// Loads the eBPF redirection into a throw-away namespace (blocking work, off the runtime).
pub async fn probe_netns() -> Result<(), String> {
    tokio::task::spawn_blocking(|| {
        meshwork_netlab::capability::probe_redirect().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Probes when `mode` needs it, then [`decide`]s.
pub async fn choose(mode: Mode) -> Result<(Chosen, String), Error> {
    let probed = match mode {
        Mode::Loopback => Ok(()),
        Mode::Netns | Mode::Auto => probe_netns().await,
    };
    decide(mode, || probed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_choice_probes_and_says_why() {
        let (m, why) = decide(Mode::Auto, || Err("not running as root".into())).unwrap();
        assert_eq!(m, Chosen::Loopback);
        assert!(why.contains("not running as root"), "{why}");
        let (m, why) = decide(Mode::Auto, || Ok(())).unwrap();
        assert_eq!(m, Chosen::Netns);
        assert!(why.contains("probed"), "{why}");
        let (m, _) = decide(Mode::Netns, || Ok(())).unwrap();
        assert_eq!(m.name(), "netns");
        let e = decide(Mode::Netns, || {
            Err("cannot load the eBPF redirection: x".into())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--mode netns") && e.contains("cannot load"),
            "{e}"
        );
        let mut probed = false;
        let (m, _) = decide(Mode::Loopback, || {
            probed = true;
            Ok(())
        })
        .unwrap();
        assert_eq!((m, probed), (Chosen::Loopback, false));
    }
}
