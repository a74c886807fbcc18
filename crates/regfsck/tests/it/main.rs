mod cli;
mod differential;
mod ops;
mod safety;
mod tree;
