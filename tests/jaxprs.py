"""Looking inside jaxprs: which matmuls a function runs, on which dtypes."""


def dot_generals(jaxpr) -> list:
    """Every ``dot_general`` equation in a jaxpr and the jaxprs nested in it."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(inner, "eqns"):
                    found.extend(dot_generals(inner))
    return found


def operand_dtypes(eqns) -> set:
    return {str(v.aval.dtype) for eqn in eqns for v in eqn.invars}
