//! What docker does when its mirror fails, and what the agent does so that it need not.
