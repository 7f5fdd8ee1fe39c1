//! The nestform engine: the graph across nesting levels, the planner, the plan file and the executor
