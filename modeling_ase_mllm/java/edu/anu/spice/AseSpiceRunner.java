package edu.anu.spice;

import java.io.FileWriter;
import java.io.Writer;

/**
 * ase-mllm's entry point to SPICE 1.0 that works on Java 15+.
 *
 * SpiceScorer.main pretty-prints its output through the Nashorn JavaScript engine, which Java 15 removed, so
 * it fails with a NullPointerException. This class runs the same scoring (SpiceScorer.scoreBatch without an
 * output path) and writes the statistics' own compact JSON instead. It lives in SPICE's package because the
 * SpiceArguments and SpiceScorer constructors are package-private.
 *
 * Usage: java -cp <this>:spice-1.0.jar:lib/*:<CoreNLP 3.6.0 jars> edu.anu.spice.AseSpiceRunner IN.json OUT.json [SPICE options]
 */
public final class AseSpiceRunner {
    private AseSpiceRunner() {}

    public static void main(String[] argv) throws Exception {
        if (argv.length < 2) {
            System.err.println("usage: AseSpiceRunner input.json output.json [-threads N] [-noSynsets]");
            System.exit(2);
        }
        String[] spiceArgv = new String[argv.length - 1];
        spiceArgv[0] = argv[0];
        System.arraycopy(argv, 2, spiceArgv, 1, argv.length - 2);
        SpiceArguments arguments = new SpiceArguments(spiceArgv);
        arguments.silent = true;
        SpiceScorer scorer = new SpiceScorer();
        scorer.scoreBatch(arguments);
        try (Writer out = new FileWriter(argv[1])) {
            out.write(scorer.stats.toJSONString());
        }
    }
}
