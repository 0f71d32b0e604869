//! One ONNX tower (vision or text): a small pool of ORT sessions plus the
//! names and element types of the inputs and output ClipQL uses.
//!
//! `Session::run` takes `&mut self`, so each session sits behind its own
//! `Mutex`. A run takes whichever session is free, or waits for one; locks
//! are never held across an `.await` (every caller is synchronous).
//!
//! The towers of one model also share a [`RunGate`]: each session's threads
//! are sized for the whole machine divided by `sessions`, so a vision run and
//! a text run side by side would put twice as many busy (and, by default,
//! spinning) threads on the cores as there are cores.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use half::f16;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use crate::error::{ClipError, Result};

/// Settings for each ORT session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ThreadConfig {
    pub intra_threads: usize,
    pub sessions: usize,
    pub spinning: bool,
    pub optimization: crate::GraphOptimization,
}

/// Element type of a float tensor the graph reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Float {
    F32,
    F16,
}

/// Element type of an integer tensor the graph reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Int {
    I64,
    I32,
}

/// An input's name, element type and static shape (-1 where dynamic).
#[derive(Debug, Clone)]
pub(crate) struct Port<T> {
    pub name: String,
    pub ty: T,
    pub shape: Vec<i64>,
}

/// One output of a run: its shape and values (as f32).
pub(crate) type Output = (Vec<i64>, Vec<f32>);

/// Lets at most `permits` ONNX Runtime runs go at once, across every tower
/// that shares it.
#[derive(Debug)]
pub(crate) struct RunGate {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One admitted run; dropping it lets the next one in.
pub(crate) struct RunPass<'g>(&'g RunGate);

impl RunGate {
    pub fn new(permits: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(permits.max(1)),
            freed: Condvar::new(),
        })
    }

    /// Waits for a permit.
    pub fn enter(&self) -> RunPass<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        RunPass(self)
    }
}

impl Drop for RunPass<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

pub(crate) struct Tower {
    pub path: PathBuf,
    sessions: Vec<Mutex<Session>>,
    gate: Arc<RunGate>,
}

impl Tower {
    /// Loads `threads.sessions` sessions of the graph at `path`; runs are
    /// admitted through `gate`, which the model's other towers share.
    pub fn load(path: &Path, threads: ThreadConfig, gate: Arc<RunGate>) -> Result<Self> {
        let env = crate::onnxruntime::environment()?;
        let ctx = || format!("loading {}", path.display());
        let sessions = (0..threads.sessions.max(1))
            .map(|_| {
                let mut builder = Session::builder(env).map_err(|e| ClipError::onnx(ctx(), e))?;
                let level = match threads.optimization {
                    crate::GraphOptimization::None => GraphOptimizationLevel::Disable,
                    crate::GraphOptimization::Basic => GraphOptimizationLevel::Level1,
                    crate::GraphOptimization::Extended => GraphOptimizationLevel::Level2,
                    crate::GraphOptimization::All => GraphOptimizationLevel::All,
                };
                builder = builder
                    .with_optimization_level(level)
                    .map_err(|e| ClipError::onnx(ctx(), e))?
                    .with_intra_threads(threads.intra_threads.max(1))
                    .map_err(|e| ClipError::onnx(ctx(), e))?
                    .with_inter_threads(1)
                    .map_err(|e| ClipError::onnx(ctx(), e))?
                    // On by default (ModelOptions::spinning says why).
                    .with_intra_op_spinning(threads.spinning)
                    .map_err(|e| ClipError::onnx(ctx(), e))?;
                builder
                    .commit_from_file(path)
                    .map(Mutex::new)
                    .map_err(|e| ClipError::onnx(ctx(), e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            path: path.to_path_buf(),
            sessions,
            gate,
        })
    }

    fn graph_err(&self, message: String) -> ClipError {
        ClipError::Graph {
            path: self.path.clone(),
            message,
        }
    }

    fn first(&self) -> MutexGuard<'_, Session> {
        self.sessions[0]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn describe(&self) -> String {
        let s = self.first();
        let names = |o: &[ort::value::Outlet]| {
            o.iter()
                .map(|o| o.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "inputs [{}], outputs [{}]",
            names(s.inputs()),
            names(s.outputs())
        )
    }

    /// The named input (or the only input when `name` is absent and there is one).
    fn find_input(&self, names: &[&str], required: bool) -> Result<Option<(String, ValueType)>> {
        let s = self.first();
        let found = s
            .inputs()
            .iter()
            .find(|i| names.contains(&i.name()))
            .map(|i| (i.name().to_string(), i.dtype().clone()));
        drop(s);
        match found {
            Some(f) => Ok(Some(f)),
            None if required => Err(self.graph_err(format!(
                "expected an input named {}; the graph has {}",
                names.join(" or "),
                self.describe()
            ))),
            None => Ok(None),
        }
    }

    pub fn float_input(&self, names: &[&str]) -> Result<Port<Float>> {
        match self.find_input(names, true)? {
            Some((name, ty)) => self.float_port("input", name, &ty),
            None => Err(self.graph_err(format!("expected an input named {}", names.join(" or ")))),
        }
    }

    /// A float tensor port, or an error naming what it is instead.
    fn float_port(&self, what: &str, name: String, ty: &ValueType) -> Result<Port<Float>> {
        let (elem, shape) = tensor_type(ty)
            .ok_or_else(|| self.graph_err(format!("{what} {name} is not a tensor")))?;
        let ty = match elem {
            TensorElementType::Float32 => Float::F32,
            TensorElementType::Float16 => Float::F16,
            other => {
                return Err(self.graph_err(format!(
                    "{what} {name} has element type {other:?}, expected float32 or float16"
                )));
            }
        };
        Ok(Port { name, ty, shape })
    }

    pub fn int_input(&self, names: &[&str], required: bool) -> Result<Option<Port<Int>>> {
        let Some((name, ty)) = self.find_input(names, required)? else {
            return Ok(None);
        };
        let (elem, shape) = tensor_type(&ty)
            .ok_or_else(|| self.graph_err(format!("input {name} is not a tensor")))?;
        let ty = match elem {
            TensorElementType::Int64 => Int::I64,
            TensorElementType::Int32 => Int::I32,
            other => {
                return Err(self.graph_err(format!(
                    "input {name} has element type {other:?}, expected int64 or int32"
                )));
            }
        };
        Ok(Some(Port { name, ty, shape }))
    }

    /// Checks that the graph has no inputs beyond `known`.
    pub fn only_inputs(&self, known: &[&str]) -> Result<()> {
        let s = self.first();
        let extra: Vec<String> = s
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .filter(|n| !known.contains(&n.as_str()))
            .collect();
        drop(s);
        if extra.is_empty() {
            Ok(())
        } else {
            Err(self.graph_err(format!(
                "unexpected input(s) {}; ClipQL feeds only {}",
                extra.join(", "),
                known.join(", ")
            )))
        }
    }

    pub fn float_output(&self, name: &str) -> Result<Port<Float>> {
        self.float_output_of(&[name])
    }

    /// The first output named in `names` that the graph has.
    pub fn float_output_of(&self, names: &[&str]) -> Result<Port<Float>> {
        let s = self.first();
        let found = names.iter().find_map(|&name| {
            s.outputs()
                .iter()
                .find(|o| o.name() == name)
                .map(|o| (name, o.dtype().clone()))
        });
        drop(s);
        match found {
            Some((name, ty)) => self.float_port("output", name.to_string(), &ty),
            None => Err(self.graph_err(format!(
                "expected an output named {}; the graph has {}",
                names.join(" or "),
                self.describe()
            ))),
        }
    }

    /// Locks a free session. The caller holds a [`RunPass`], and the gate
    /// has as many permits as this tower has sessions, so one is free; the
    /// blocking lock is only a fallback.
    fn acquire(&self) -> MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(guard) = s.try_lock() {
                return guard;
            }
        }
        self.sessions[0]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs the graph and returns the requested float outputs as `f32`
    /// (row-major data plus shape), in the order asked for.
    pub fn run(
        &self,
        inputs: Vec<(String, DynValue)>,
        outputs: &[&Port<Float>],
        context: &str,
    ) -> Result<(Vec<Output>, std::time::Duration)> {
        let _pass = self.gate.enter();
        let mut session = self.acquire();
        // Timed from here: waiting for a pass or a session is not inference.
        let start = std::time::Instant::now();
        let result = session
            .run(inputs)
            .map_err(|e| ClipError::onnx(format!("{context} ({})", self.path.display()), e))?;
        let took = start.elapsed();
        let outputs = outputs
            .iter()
            .map(|port| {
                let value = result.get(&port.name).ok_or_else(|| {
                    self.graph_err(format!("output {} missing from the result", port.name))
                })?;
                let extracted = match port.ty {
                    Float::F32 => value
                        .try_extract_tensor::<f32>()
                        .map(|(shape, data)| (shape.to_vec(), data.to_vec())),
                    Float::F16 => value.try_extract_tensor::<f16>().map(|(shape, data)| {
                        (shape.to_vec(), data.iter().map(|v| v.to_f32()).collect())
                    }),
                };
                extracted.map_err(|e| ClipError::onnx(format!("reading output {}", port.name), e))
            })
            .collect::<Result<_>>()?;
        Ok((outputs, took))
    }
}

fn tensor_type(ty: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.to_vec())),
        _ => None,
    }
}

/// Builds a float tensor of the port's element type.
pub(crate) fn float_tensor(
    port: &Port<Float>,
    shape: Vec<i64>,
    data: Vec<f32>,
) -> Result<DynValue> {
    let ctx = |e: ort::Error| ClipError::onnx(format!("creating input {}", port.name), e);
    Ok(match port.ty {
        Float::F32 => Tensor::from_array((shape, data)).map_err(ctx)?.into_dyn(),
        Float::F16 => {
            let data: Vec<f16> = data.into_iter().map(f16::from_f32).collect();
            Tensor::from_array((shape, data)).map_err(ctx)?.into_dyn()
        }
    })
}

/// Builds an integer tensor of the port's element type.
pub(crate) fn int_tensor(port: &Port<Int>, shape: Vec<i64>, data: Vec<i64>) -> Result<DynValue> {
    let ctx = |e: ort::Error| ClipError::onnx(format!("creating input {}", port.name), e);
    Ok(match port.ty {
        Int::I64 => Tensor::from_array((shape, data)).map_err(ctx)?.into_dyn(),
        Int::I32 => {
            let data: Vec<i32> = data.into_iter().map(|v| v as i32).collect();
            Tensor::from_array((shape, data)).map_err(ctx)?.into_dyn()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// However many threads ask, no more than `permits` are inside at once,
    /// and every one of them gets in.
    #[test]
    fn the_gate_admits_at_most_its_permits() {
        for permits in [1, 2] {
            let gate = RunGate::new(permits);
            let (inside, most, done) = (
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            );
            std::thread::scope(|s| {
                for _ in 0..6 {
                    s.spawn(|| {
                        for _ in 0..5 {
                            let _pass = gate.enter();
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(2));
                            inside.fetch_sub(1, Ordering::SeqCst);
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
            });
            assert_eq!(done.load(Ordering::SeqCst), 30);
            assert_eq!(most.load(Ordering::SeqCst), permits, "permits {permits}");
        }
        // Zero permits would block forever; it is taken as one.
        drop(RunGate::new(0).enter());
    }
}
