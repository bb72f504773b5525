package edu.anu.spice;

import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Reader;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;

import org.json.simple.JSONArray;
import org.json.simple.JSONObject;
import org.json.simple.parser.JSONParser;

/**
 * ase-mllm's entry point to SPICE 1.0, for Java 15+.
 *
 * It scores exactly as SpiceScorer.scoreBatch does (one SpiceParser; per entry a SceneGraph of the candidate's
 * tuples and one of all its references' tuples, in input order; SpiceStats) with three differences:
 * - SpiceScorer pretty-prints its output through the Nashorn JavaScript engine, which Java 15 removed; this
 *   class writes the statistics' compact JSON itself.
 * - scoreBatch parses a caption once per occurrence. Our input repeats every candidate once per reference (the
 *   SPICE-L runs), so this class parses each distinct caption once (through the parse cache when one is given).
 * - When parsing fails it parses the captions one at a time to find the one that fails, and reports it.
 *   An OutOfMemoryError is reported as it is: which caption exhausted the heap cannot be told apart.
 * It lives in SPICE's package because SpiceArguments' constructor and SpiceParser's tuple loading are
 * package-private.
 *
 * Usage: java -cp CLASSES:spice-1.0.jar:lib/*:CORENLP_JARS edu.anu.spice.AseSpiceRunner IN.json OUT.json
 *            [-cache DIR] [-threads N] [-noSynsets]
 * OUT.json: {"scores": [{"image_id", "scores": {"All": {pr, re, f, tp, fp, fn}}}], "captions": n, "cached": k}
 * Exit status 3: a caption could not be parsed; OUT.json is {"error": cause, "caption": the caption or null}.
 */
public final class AseSpiceRunner {
    private AseSpiceRunner() {}

    @SuppressWarnings("unchecked")
    public static void main(String[] argv) throws Exception {
        if (argv.length < 2) {
            System.err.println("usage: AseSpiceRunner input.json output.json [-cache DIR] [-threads N] [-noSynsets]");
            System.exit(2);
        }
        String[] spiceArgv = new String[argv.length - 1];
        spiceArgv[0] = argv[0];
        System.arraycopy(argv, 2, spiceArgv, 1, argv.length - 2);
        SpiceArguments arguments = new SpiceArguments(spiceArgv);

        JSONArray input;
        try (Reader reader = new InputStreamReader(new FileInputStream(arguments.inputPath), StandardCharsets.UTF_8)) {
            input = (JSONArray) new JSONParser().parse(reader);
        }
        LinkedHashSet<String> distinct = new LinkedHashSet<String>();
        for (Object o : input) {
            JSONObject item = (JSONObject) o;
            for (Object ref : (JSONArray) item.get("refs")) {
                distinct.add((String) ref);
            }
            distinct.add((String) item.get("test"));
        }
        List<String> captions = new ArrayList<String>(distinct);

        SpiceParser parser = new SpiceParser(arguments.cache, arguments.numThreads, arguments.synsets);
        int cached = parser.db == null ? 0 : parser.db.getTransaction(captions).size();
        Map<String, ArrayList<ArrayList<String>>> tuples;
        try {
            tuples = parser.loadTuples(captions);
        } catch (Throwable error) {
            JSONObject failure = new JSONObject();
            failure.put("error", describe(error));
            failure.put("caption", isOutOfMemory(error) ? null : findFailingCaption(parser, captions));
            write(argv[1], failure.toJSONString());
            System.exit(3);
            return;
        }

        SpiceStats stats = new SpiceStats(new HashMap<String, TupleFilter>(), false);
        for (Object o : input) {
            JSONObject item = (JSONObject) o;
            List<String> refs = new ArrayList<String>();
            for (Object ref : (JSONArray) item.get("refs")) {
                refs.add((String) ref);
            }
            SceneGraph test = sceneGraph(parser, tuples, Collections.singletonList((String) item.get("test")));
            stats.score(item.get("image_id"), test, sceneGraph(parser, tuples, refs), arguments.synsets);
        }
        JSONObject result = new JSONObject();
        result.put("scores", stats.toJSONArray());
        result.put("captions", captions.size());
        result.put("cached", cached);
        write(argv[1], result.toJSONString());
    }

    /** The scene graph of some captions' tuples, as SpiceParser.parseCaptions builds it. */
    private static SceneGraph sceneGraph(SpiceParser parser, Map<String, ArrayList<ArrayList<String>>> tuples,
                                         List<String> captions) {
        SceneGraph scene = new SceneGraph(parser.synonyms, parser.mergeSimilarNodes);
        for (String caption : captions) {
            for (ArrayList<String> tuple : tuples.get(caption)) {
                scene.addTuple(tuple);
            }
        }
        return scene;
    }

    /**
     * The first caption that fails when parsed alone, provided some other caption parses alone (otherwise the
     * failure is not the caption's: memory, a broken class after an error in another thread), else null.
     */
    private static String findFailingCaption(SpiceParser parser, List<String> captions) {
        String failing = null;
        boolean anyParsed = false;
        for (String caption : captions) {
            try {
                parser.loadTuples(Collections.singletonList(caption));
                anyParsed = true;
            } catch (Throwable error) {
                if (failing == null) {
                    failing = caption;
                }
            }
            if (failing != null && anyParsed) {
                return failing;
            }
        }
        return null;
    }

    private static boolean isOutOfMemory(Throwable error) {
        for (Throwable cause = error; cause != null; cause = cause.getCause() == cause ? null : cause.getCause()) {
            if (cause instanceof OutOfMemoryError) {
                return true;
            }
        }
        return false;
    }

    private static String describe(Throwable error) {
        Throwable root = error;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        String text = root.getClass().getName() + (root.getMessage() == null ? "" : ": " + root.getMessage());
        return root == error ? text : error.getClass().getName() + " caused by " + text;
    }

    private static void write(String path, String json) throws Exception {
        try (Writer out = new OutputStreamWriter(new FileOutputStream(path), StandardCharsets.UTF_8)) {
            out.write(json);
        }
    }
}
