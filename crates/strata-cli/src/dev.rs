//! `strata dev`: owned by the core session; placeholder until it lands.
#[derive(clap::Args, Debug)]
pub struct DevArgs {}
pub async fn run(_args: DevArgs, _log_level: &str) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not yet")
}
