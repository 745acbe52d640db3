use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use xtask::backend::run_on;
use xtask::cli::{BenchCommand, Cli, Command, TrainCommand};
use xtask::train::ibinn::{IbInnTrainConfig, IbInnTrainJob, TrainOutcome};
use xtask::train::run::read_toml;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Stopped on Ctrl-C at a checkpoint: not a failure, but not finished either, and
            // scripts must be able to tell.
            if xtask::interrupt::requested() {
                ExitCode::from(xtask::interrupt::EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Trains one model of [`xtask::train::supervised`] from the config its command line built.
fn train_aux(
    args: &xtask::cli::AuxArgs,
    (cfg, root): (
        xtask::train::supervised::SupervisedTrainConfig,
        std::path::PathBuf,
    ),
    replicas: usize,
) -> Result<()> {
    let loss = cfg.model.loss_name();
    let job = xtask::train::supervised::SupervisedTrainJob {
        cfg,
        run_root: root.clone(),
        resume: args.resume,
        replicas,
    };
    let last = run_on(args.backend.kind(), job)?;
    println!(
        "test {loss} {:.5}{}; model in {}",
        last.test_loss,
        last.test_accuracy
            .map(|a| format!(", test accuracy {:.2}%", 100.0 * a))
            .unwrap_or_default(),
        root.display()
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    // The subnets' convolution algorithm (cfx_flows::nn::ConvStrategy): a performance setting
    // with no effect on results, so an environment variable rather than a flag on every command.
    if let Ok(s) = std::env::var("CFX_CONV") {
        let strategy = s
            .parse()
            .map_err(|e: String| anyhow::anyhow!("CFX_CONV: {e}"))?;
        cfx_flows::nn::set_conv_strategy(strategy);
    }
    // Which backend-specific ops run (training batch norm, the optimiser's gathering, the
    // couplings' affine half-step): also only speed settings (xtask::op_settings).
    xtask::op_settings::register_backend_ops(xtask::op_settings::OpSettings::from_env()?);
    if matches!(cli.command, Command::Train(_)) {
        xtask::interrupt::install()?;
    }
    match cli.command {
        Command::Train(TrainCommand::IbInn(args)) => {
            let (cfg, root) = if args.resume || args.test_only {
                let probe = args.new_config().unwrap_or_default();
                let root = args.run_root(&probe);
                let saved: IbInnTrainConfig = read_toml(&root.join("config.toml"))?;
                (args.resumed_config(saved)?, root)
            } else {
                let cfg = args.new_config()?;
                let root = args.run_root(&cfg);
                (cfg, root)
            };
            let job = IbInnTrainJob {
                cfg,
                run_root: root.clone(),
                resume: args.resume,
                control: args.control(),
                replicas: args.replicas,
                test_only: args.test_only,
            };
            match run_on(args.backend.kind(), job)? {
                TrainOutcome::Finished(r) => {
                    println!(
                        "{}: test accuracy {:.2}% (error {:.2}%), bits/dim {:.3} (the reference code would print {:.3}); model in {}",
                        r.dataset,
                        100.0 * r.accuracy,
                        r.error_percent,
                        r.bpd,
                        r.bpd_reference_convention,
                        root.display()
                    );
                }
                TrainOutcome::Paused { checkpoint, state } => {
                    let at = format!(
                        "after {} epochs + {} steps ({})",
                        state.epochs_done,
                        state.step_in_epoch,
                        checkpoint.display()
                    );
                    if xtask::interrupt::requested() {
                        return Err(xtask::interrupt::stopped(&at));
                    }
                    println!("paused {at}; continue with --resume");
                }
            }
        }
        Command::Train(TrainCommand::Classifier(args)) => {
            train_aux(&args.common, args.config()?, 1)?
        }
        Command::Train(TrainCommand::Autoencoder(args)) => {
            train_aux(&args, args.config(true, None)?, 1)?
        }
        Command::Train(TrainCommand::Realnvp(args)) => {
            let model = Some(args.model(false)?);
            train_aux(
                &args.common,
                args.common.config(false, model)?,
                args.replicas,
            )?
        }
        Command::Train(TrainCommand::Glow(args)) => {
            let model = Some(args.model(true)?);
            train_aux(
                &args.common,
                args.common.config(false, model)?,
                args.replicas,
            )?
        }
        Command::Train(TrainCommand::Vae(args)) => {
            let vae = xtask::train::supervised::AuxModel::Vae(Default::default());
            train_aux(&args, args.config(false, Some(vae))?, 1)?
        }
        Command::Train(TrainCommand::Dcgan(args)) => {
            let (cfg, root) = args.config(false)?;
            let job = xtask::train::gan::GanTrainJob {
                cfg: cfg.train,
                run_root: root.clone(),
                resume: args.common.resume,
            };
            let last = run_on(args.common.backend.kind(), job)?;
            println!(
                "after {} epochs: loss D {:.4}, loss G {:.4}, D(x) {:.3}, D(G(z)) {:.3}; model in {}",
                last.epoch,
                last.loss_d,
                last.loss_g,
                last.d_real,
                last.d_fake,
                root.display()
            );
        }
        Command::Train(TrainCommand::GanEncoder(args)) => {
            let (cfg, root) = args.config(true)?;
            let job = xtask::train::gan::EncoderTrainJob {
                cfg,
                run_root: root.clone(),
                resume: args.common.resume,
            };
            let last = run_on(args.common.backend.kind(), job)?;
            println!(
                "test |G(E(x)) − x| {:.4} after {} epochs; model in {}",
                last.test_reconstruction_l1,
                last.epoch,
                root.display()
            );
        }
        Command::Train(TrainCommand::C3lt(args)) => {
            let (cfg, root) = args.config()?;
            let pair = cfg.pair;
            let job = xtask::train::c3lt::C3ltTrainJob {
                cfg,
                run_root: root.clone(),
                resume: args.common.resume,
            };
            let last = run_on(args.common.backend.kind(), job)?;
            match (last.val, last.cout, last.prox_unit, last.prox_gan) {
                (Some(v), Some(c), Some(p), Some(pg)) => println!(
                    "after {} epochs on {} test images: Val {v:.3}, COUT {c:.3}, Prox {p:.4} ({pg:.4} in [-1, 1]); maps in {}",
                    last.epoch,
                    last.n_test,
                    root.display()
                ),
                // Stopped (Ctrl-C) after an epoch that --eval-every left unscored.
                _ => println!(
                    "after {} epochs (the test set was not scored after this one; metrics.csv has the last scores); maps in {}",
                    last.epoch,
                    root.display()
                ),
            }
            if let (Some(v), Some(c), Some(p)) = (last.val_fwd, last.cout_fwd, last.prox_gan_fwd) {
                println!(
                    "{} → {} alone (the reference's evaluation): Val {v:.3}, COUT {c:.3}, Prox {p:.4} in [-1, 1]",
                    pair[0], pair[1]
                );
            }
        }
        Command::Train(TrainCommand::EvalSuite(args)) => {
            let (plan, root) = args.plan();
            let m = xtask::train::suite::train_suite(&plan, &root, args.backend.kind())?;
            println!(
                "{} models for {} in {} ({}); evaluate with --suite {}",
                m.members.len(),
                m.dataset,
                root.display(),
                m.range.label(),
                root.display()
            );
        }
        Command::Explain(args) => {
            let job = match args.plan()? {
                xtask::cli::ExplainPlan::Counterfactuals(job) => job,
                xtask::cli::ExplainPlan::Heatmaps(job) => {
                    let r = run_on(args.backend.kind(), job)?;
                    for m in &r.methods {
                        println!(
                            "{} on the {}: {} heatmaps, {:.5} s each{}",
                            m.method.name(),
                            r.model_kind,
                            m.maps,
                            m.seconds_per_map,
                            m.label_column_mass
                                .map(|v| format!(", {v:.1}% of |h| in the label column"))
                                .unwrap_or_default()
                        );
                    }
                    println!("{}", r.figure);
                    return Ok(());
                }
            };
            let out = job.out.clone();
            let r = run_on(args.backend.kind(), job)?;
            for v in &r.variants {
                println!(
                    "{} {}: {} counterfactuals, validity {:.2}%{}{}{}",
                    args.model.display(),
                    v.name,
                    v.counterfactuals,
                    100.0 * v.validity,
                    if v.found < 1.0 {
                        format!(
                            ", found {:.2}% (none: {})",
                            100.0 * v.found,
                            xtask::explain::misses_line(&v.misses)
                        )
                    } else {
                        String::new()
                    },
                    v.mean_alpha
                        .map(|a| format!(", mean α {a:.3}"))
                        .unwrap_or_default(),
                    v.change_ratio_outside_column0
                        .map(|r| format!(
                            ", change outside the label column {:.2}% of the change in it",
                            100.0 * r
                        ))
                        .unwrap_or_default()
                );
                if let Some(f) = v.out_of_range.filter(|&f| f > 0.0) {
                    println!(
                        "  warning: the inverse pass put {:.2}% of these more than half the pixel \
                         range outside [0, 1] (they are scored all the same; `cargo xtask \
                         inverse-trace --model {}` shows whether the inverse leaves its range \
                         inside the model, and at which block, or only at the image)",
                        100.0 * f,
                        args.model.display()
                    );
                }
            }
            println!(
                "{:.6} s per counterfactual (batch {}); {} figures; {}",
                r.seconds_per_query,
                r.batch_size,
                r.figures.len(),
                out.join("explanations.json").display()
            );
        }
        Command::Evaluate(args) => {
            let job = args.job()?;
            let out = job.out.clone();
            let r = run_on(args.backend.kind(), job)?;
            for m in &r.methods {
                let tcv = m
                    .metrics
                    .iter()
                    .find(|s| s.metric == "TCV")
                    .and_then(|s| s.mean);
                // A shared-inputs row re-scores counterfactuals already timed in its method's row.
                let time = match m.shared_inputs {
                    true => String::new(),
                    false => format!(
                        ", {:.4} s per counterfactual{}",
                        m.seconds_per_counterfactual,
                        if m.from_cache { " (cached)" } else { "" }
                    ),
                };
                println!(
                    "{:?}{}: {} samples, {} valid (TCV {:.2}%){time}",
                    m.method,
                    if m.shared_inputs {
                        " on the same inputs"
                    } else {
                        ""
                    },
                    m.samples,
                    m.valid,
                    tcv.unwrap_or(f64::NAN),
                );
            }
            println!(
                "{:.1} s in all; {}",
                r.total_seconds,
                out.join("results.md").display()
            );
        }
        Command::Bench(BenchCommand::Step(args)) => {
            xtask::bench::step(&args)?;
        }
        Command::Bench(BenchCommand::Fasth(args)) => {
            xtask::bench::fasth(&args)?;
        }
        Command::Bench(BenchCommand::Fid(args)) => {
            xtask::bench::fid(&args)?;
        }
        Command::Bench(BenchCommand::GlowConv(args)) => {
            xtask::bench::glow_conv(&args)?;
        }
        Command::Bench(BenchCommand::Ecinn(args)) => {
            xtask::bench::ecinn(&args)?;
        }
        Command::Bench(BenchCommand::Conv(args)) => {
            xtask::bench::conv(&args)?;
        }
        Command::Bench(BenchCommand::All(args)) => {
            let out = xtask::bench::all(&args)?;
            for f in out.files {
                println!("wrote {}", f.display());
            }
        }
        Command::Helix(args) => {
            let r = run_on(args.backend.kind(), args.job())?;
            let e = r.inverse_metric_eigenvalues;
            for s in [&r.latent, &r.pixel] {
                println!(
                    "{:?}: {}/{} reached {}; distance to the helix median {:.4}, mean {:.4}; median steps {}",
                    s.space,
                    s.successes,
                    s.runs,
                    args.threshold,
                    s.median_distance,
                    s.mean_distance,
                    s.median_steps
                );
            }
            println!(
                "flow {:.3} bits/dim, classifier accuracy {:.1} %; γ⁻¹ eigenvalues {:.3e} {:.3e} {:.3e}, \
                 top eigenvector · tangent |cos| {:.3}; {:.1} s; {}",
                r.flow_nll_bits,
                100.0 * r.classifier_accuracy,
                e[0],
                e[1],
                e[2],
                r.top_eigenvector_tangent_cos,
                r.seconds,
                args.out.join("helix.json").display()
            );
        }
        Command::LogDet(args) => {
            let r = run_on(args.backend.kind(), args.job())?;
            println!(
                "{} ({}, {} clean test images): L_x {:.4} nats/dim = latent term {:.4} − log-det {:.4}; \
                 as the reference code prints it: {:.3} bits/dim; {}\n\n{}",
                r.model,
                r.dataset,
                r.images,
                r.l_x,
                r.latent_term,
                r.log_det_per_dim,
                r.bpd_reference_convention,
                xtask::logdet::report_path(&args.model).display(),
                r.markdown()
            );
        }
        Command::ImportIbinn(args) => {
            let r = run_on(args.backend.kind(), args.job())?;
            if let Some(c) = &r.check {
                println!(
                    "check batch of {} images: max |Δz| {:.3e} (max |z| {:.3}), L_x {:.6} (reference) \
                     against {:.6} (ours), max |ΔL_x| {:.3e}, max |Δlogit| {:.3e}, {} predictions differ",
                    c.images,
                    c.max_abs_z_diff,
                    c.max_abs_z,
                    c.l_x_reference,
                    c.l_x_ours,
                    c.max_abs_l_x_diff,
                    c.max_abs_logit_diff,
                    c.prediction_mismatches
                );
                if let Some(b) = c
                    .blocks
                    .iter()
                    .find(|b| b.max_abs_diff > 1e-4 * b.max_abs.max(1.0))
                {
                    println!(
                        "first block that parts from the reference: {} ({}), max |Δ| {:.3e} of max {:.3}",
                        b.block, b.kind, b.max_abs_diff, b.max_abs
                    );
                }
            }
            if let Some(g) = &r.gradients {
                println!(
                    "training pass over {} images: loss {:.6} (reference) against {:.6} (ours), \
                     gradient norm {:.6} against {:.6}, max |Δ∂L/∂μ| {:.3e} (max {:.3e}), \
                     max |Δ∂L/∂φ| {:.3e}",
                    g.images,
                    g.loss_reference,
                    g.loss_ours,
                    g.grad_norm_reference,
                    g.grad_norm_ours,
                    g.max_abs_grad_mu_diff,
                    g.max_abs_grad_mu,
                    g.max_abs_grad_phi_diff
                );
            }
            if let Some(s) = &r.steps {
                let list = |v: &[f64]| {
                    v.iter()
                        .map(|x| format!("{x:.6}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                println!(
                    "{} optimiser steps of {} images: losses {} (reference) against {} (ours); \
                     gradient norms {} against {}",
                    s.steps,
                    s.images_per_step,
                    list(&s.loss_reference),
                    list(&s.loss_ours),
                    list(&s.grad_norm_reference),
                    list(&s.grad_norm_ours)
                );
                println!(
                    "after them, over {} tensors: max |Δ| {:.3e}, where the steps moved a value by \
                     up to {:.3e}; largest share of its own movement: {} ({:.3e} of {:.3e}){}",
                    s.tensors,
                    s.max_abs_diff,
                    s.max_abs_moved,
                    s.worst.path,
                    s.worst.max_abs_diff,
                    s.worst.max_abs_moved,
                    match (s.max_abs_z_diff, s.max_abs_z) {
                        (Some(d), Some(m)) =>
                            format!("; check batch after the steps: max |Δz| {d:.3e} of {m:.3}"),
                        _ => String::new(),
                    }
                );
            }
            println!(
                "{} tensors of {} → {}: test error {:.2}% on {} images, {:.3} bits/dim as the reference \
                 code prints it; {}",
                r.tensors,
                r.weights,
                r.run,
                r.test.error_percent,
                r.test.n,
                r.test.bpd_reference_convention,
                xtask::import::report_path(std::path::Path::new(&r.run)).display()
            );
        }
        Command::InverseTrace(args) => {
            let r = run_on(args.backend.kind(), args.job())?;
            println!(
                "{} ({}, {} test images, {} α1 queries): {} with a pixel more than half the \
                 pixel range outside [0, 1]; {} diverged (mean |x̂ − x| > {} per pixel), \
                 {} of them without leaving the forward envelope by {}×; {}\n\n{}",
                r.model,
                r.dataset,
                r.images,
                r.queries,
                r.out_of_range_at_image,
                r.diverged,
                r.diverged_change,
                r.diverged_in_range,
                r.factor,
                xtask::inverse_trace::report_path(&args.model).display(),
                r.markdown()
            );
        }
        Command::Invert(args) => {
            let out = args.job().out;
            let r = run_on(args.backend.kind(), args.job())?;
            println!(
                "{} ({}, classes {:?}, {} test images, {} Adam steps at lr {}; {:.1} s): {}\n\n{}",
                r.gan,
                r.dataset,
                r.classes,
                r.images,
                r.steps,
                r.lr,
                r.seconds,
                out.display(),
                r.markdown()
            );
        }
        Command::Tangent(args) => {
            let out = args.job().out;
            let r = run_on(args.backend.kind(), args.job())?;
            let s = &r.mean_singular_values;
            let at = |k: usize| s.get(k - 1).copied().unwrap_or(f64::NAN);
            println!(
                "{} ({}, D = {}), mean over {} images: σ1 {:.4}, σ10 {:.4}, σ100 {:.4}, σ{} {:.3e}; \
                 {:.1} above 1 % of σ1, {:.1} above 10 %; {:.2} s per image; {}",
                r.flow,
                r.dataset,
                r.dimension,
                r.images,
                at(1),
                at(10),
                at(100),
                r.dimension,
                at(r.dimension),
                r.above_1_percent,
                r.above_10_percent,
                r.seconds_per_image,
                out.display()
            );
        }
    }
    Ok(())
}
