mod cli;
mod ops;
mod safety;
