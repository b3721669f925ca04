"""Use cases: each public function owns its transaction; side effects go out after commit."""
