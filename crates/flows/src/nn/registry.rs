//! Backend-specific versions of generic layers, registered by the process.
//!
//! The models are generic over `B: Backend` at some 260 places, and only the binary knows the
//! concrete backend (`Autodiff<CubeBackend<CudaRuntime, …>>`) that has a faster version of an
//! op (a custom autodiff op, a backend's own kernel). So the fast versions are plain function
//! pointers kept in one process-wide table, keyed by the pointer's type: that type names the
//! backend in its signature, so each (op, backend) pair has its own key and a lookup can never
//! hand one backend's function to another.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

type Table = RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Makes `f` the registered function of its type (a later call replaces it).
pub fn register<F: Any + Send + Sync + Copy>(f: F) {
    table()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(TypeId::of::<F>(), Box::new(f));
}

/// The function registered for type `F`, if any.
pub fn registered<F: Any + Copy>() -> Option<F> {
    table()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&TypeId::of::<F>())
        .and_then(|f| f.downcast_ref::<F>().copied())
}
